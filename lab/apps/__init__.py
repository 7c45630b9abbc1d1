"""The lab's built-in "images": small Python programs that run inside pod network namespaces.

Owns the programs (`probe`, `stars_probe`, `management_ui`) and the table that maps an image name
from a Pod manifest to the module that runs it (`images`). It does not own the namespaces, veths,
hosts files or process supervision: `lab.topology` starts these programs, one per pod.

Invariant: importing this package (or `lab.apps.probe`) pulls in nothing heavier than the standard
library, because `probe connect` is started once per source pod for every probe batch.
"""
