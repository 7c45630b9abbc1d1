# ---- services (owner: services helper) --------------------------------------------------------
# Real etcd (127.0.0.1:2379), Mosquitto (127.0.0.1:1883) and Kafka (127.0.0.1:9092) for fv tests;
# data and logs in .run/services/, Kafka jars in .cache/kafka-libs/. See deploy/services/services.sh.
.PHONY: services services-down services-status

services:
	KALIKO_PYTHON=$(CURDIR)/.venv/bin/python bash deploy/services/services.sh up

services-down:
	bash deploy/services/services.sh down

services-status:
	bash deploy/services/services.sh status
# ---- end services -------------------------------------------------------------------------------
