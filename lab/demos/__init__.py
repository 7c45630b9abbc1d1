"""The lab's demos: Calico's Stars, basic and advanced policy tutorials as manifests plus steps.

Owns the YAML under `lab/demos/<demo>/` (Namespaces, Pods running the built-in images, Services,
and the tutorials' NetworkPolicies, unchanged in content) and `catalog`, which loads and checks
each demo's `steps.yaml`. It does not apply manifests or probe (the lab and `kalikoctl lab` do).
"""
