"""The MOUS data model: the custom resource's spec and status as pydantic models.

The models mirror the CRD's OpenAPI schema field for field (tests/model/test_crd_parity.py keeps the two from
drifting). Checks that need more than one field, or telescope knowledge, live in `semantics`, because the
API server cannot express them and the operator reports them as a Degraded condition instead of rejecting.
"""

from mousflow.model.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    MOUSResource,
    load_manifest,
    load_manifest_file,
)
from mousflow.model.semantics import SpecProblem, check_spec_semantics
from mousflow.model.spec import (
    CalibratorFlux,
    DeliverySpec,
    ExecutionBlockRef,
    ImagingSpec,
    MOUSSpec,
    OutputSpec,
    Recipe,
    ResolutionRange,
    ScienceGoal,
    uid_digest,
)
from mousflow.model.status import Condition, MOUSStatus, Phase, QA2Status, StageName, StageState, StageStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "CalibratorFlux",
    "Condition",
    "DeliverySpec",
    "ExecutionBlockRef",
    "ImagingSpec",
    "MOUSResource",
    "MOUSSpec",
    "MOUSStatus",
    "OutputSpec",
    "Phase",
    "QA2Status",
    "Recipe",
    "ResolutionRange",
    "ScienceGoal",
    "SpecProblem",
    "StageName",
    "StageState",
    "StageStatus",
    "check_spec_semantics",
    "load_manifest",
    "load_manifest_file",
    "uid_digest",
]
