"""mousflow: calibration, imaging, QA2 and delivery of ALMA MOUSs, locally or on Kubernetes.

Layers (imports point downwards only):
    mousflow.cli                 composition root: the `mousflow` command
    mousflow_operator            Kubernetes: kopf handlers, manifest builders (separate package)
    mousflow.pipeline            Prefect flow: orchestration and checkpoints
    mousflow.stages              one entry point per stage, the same in a local process and in a pod
    mousflow.science             pure kernels: simulation, calibration, imaging, QA (numpy/ducc0/astropy)
    mousflow.storage             fsspec/Zarr access, MSv4 read/write, commit markers
    mousflow.model, .telescope   pydantic MOUS model and telescope facts, imported by every layer
"""

__version__ = "0.1.0"
