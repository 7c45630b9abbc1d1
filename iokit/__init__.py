"""Asyncio plumbing both services share; knows nothing about policy semantics.

Each contract module comes with a real adapter and an in-memory twin that pass the same tests:

    store.py   (protocol, errors) ── etcd_store.py (aetcd)    ── memory_store.py
    bus.py     (protocol, errors) ── kafka_bus.py  (aiokafka) ── memory_bus.py
    status.py  (protocol, codec)  ── mqtt_status.py (aiomqtt) ── memory_status.py

plus syncer.py (list-then-watch over any store), supervise.py (task group + signals), backoff.py,
throttle.py (token bucket + coalescing trigger) and health.py (/liveness, /readiness, /metrics).
Nothing here runs at import time.
"""
