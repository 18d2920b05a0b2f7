"""Pipeline stages: one entry point each, the same whether run in a local process or in a pod.

`mousflow stage <name> --manifest URI` runs one stage for the MOUS whose manifest is at URI (the flow writes it
to <output>/mous.yaml); the stage reads its inputs from and writes its outputs to object storage only, ends
with a checkpoint, and reports its outcome in <output>/status/<name>.json.
"""

STAGE_ORDER = ("calibration", "imaging", "packaging")
