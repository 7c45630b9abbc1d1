"""Generated protobuf/gRPC stubs (see wire/generate.py); do not edit."""
