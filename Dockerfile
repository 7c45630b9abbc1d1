# One image for both services: `kaliko-controller` and `kaliko-agent` (the console scripts that
# pyproject.toml's [project.scripts] installs). compose.yaml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# nftables brings libnftables for the agent's nftables data plane; iproute2 for `ip`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml ./
COPY policycore/ policycore/
COPY wire/ wire/
COPY iokit/ iokit/
COPY controller/ controller/
COPY node_agent/ node_agent/
COPY lab/ lab/
COPY loadtest/ loadtest/
COPY kalikoctl/ kalikoctl/
RUN pip install . \
 && kaliko-controller --help >/dev/null \
 && kaliko-agent --help >/dev/null

WORKDIR /
EXPOSE 50051
CMD ["kaliko-controller", "--help"]
