"""The MOUSCampaign resource: an archive re-imaging campaign, a list of inputs the operator turns into MOUSs.

The spec names the inputs (each a MOUS manifest in storage, a MOUS spec, or execution blocks with an archive
UID), a template shared by all of them (recipe, output prefix, delivery, the spec fields an input lacks) and a
throttle. The status is the operator's: counts by phase and by failure class, one line per entry, and the final
report once every entry is finished. Like the MOUS, the models mirror the CRD field for field
(tests/model/test_campaign_crd_parity.py).

Which of `manifest`, `mous` and `executionBlocks` an input gives (exactly one) is checked by the operator, per
entry, not by the schema: a campaign with one wrong entry goes on with the others and says which was wrong.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from mousflow.model.base import CRModel
from mousflow.model.resource import ObjectMeta
from mousflow.model.spec import UID_PATTERN, URI_PATTERN, ExecutionBlockRef, Recipe
from mousflow.model.status import Condition

CAMPAIGN_KIND = "MOUSCampaign"
CAMPAIGN_PLURAL = "mouscampaigns"
# an entry's name becomes part of a MOUS's name: a DNS label, short enough to leave room for the campaign's
ENTRY_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class CampaignInput(CRModel):
    """One dataset of the campaign: exactly one of `manifest`, `mous` or (`uid` with) `executionBlocks`."""

    name: Annotated[str | None, Field(pattern=ENTRY_NAME_PATTERN)] = None
    """Optional; the MOUS is named <campaign>-<name> (else <campaign>-<hash of the input>)."""
    manifest: Annotated[str | None, Field(pattern=URI_PATTERN, max_length=1024)] = None
    """A MOUS manifest in storage (as `mousflow simulate` and `mousflow import-ms` write them)."""
    mous: dict[str, Any] | None = None
    """A MOUS spec (camelCase, as in a MOUS manifest), merged over the template's `spec`."""
    uid: Annotated[str | None, Field(pattern=UID_PATTERN)] = None
    """With `executionBlocks`: the MOUS's archive UID (the rest of the spec comes from the template)."""
    execution_blocks: Annotated[list[ExecutionBlockRef] | None, Field(min_length=1, max_length=100)] = None


class CampaignTemplate(CRModel):
    """What every MOUS of the campaign shares."""

    output_prefix: Annotated[str, Field(pattern=URI_PATTERN, max_length=900)]
    """Each MOUS writes under <outputPrefix>/mous/<MOUS name>; the final report goes to <outputPrefix>/report/."""
    delivery_prefix: Annotated[str | None, Field(pattern=URI_PATTERN, max_length=900)] = None
    """Delivered products go to <deliveryPrefix>/<MOUS name> (unset: the MOUSs name no delivery location)."""
    automatic_delivery: bool = True
    """Deliver a QA2 Pass without review (an unsupervised campaign); a MOUS needing review ends the campaign's
    part as NeedsReview."""
    recipe: Recipe | None = None
    priority: Annotated[int | None, Field(ge=0, le=100)] = None
    deadline: AwareDatetime | None = None
    """When the campaign should be finished: reported (status, final report), it does not reorder the queue."""
    spec: dict[str, Any] | None = None
    """MOUS spec fields an input lacks (e.g. projectCode, band, scienceGoals, fullyObservedAt for inputs that
    name only execution blocks); an input's own fields win."""


class MOUSCampaignSpec(CRModel):
    inputs: Annotated[list[CampaignInput], Field(min_length=1, max_length=5000)]
    template: CampaignTemplate
    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 2
    """At most this many of the campaign's MOUSs unfinished (created and not yet terminal) at once."""
    max_remediations: Annotated[int, Field(ge=0, le=10)] = 2
    """Automatic remediations (retries) per MOUS; after that its failure is final."""
    backoff_seconds: Annotated[float, Field(ge=0, le=86400)] = 60.0
    """Wait before retrying a transient failure (Unavailable, Busy): backoff * 2**(n-1) for the n-th."""


class PhaseCounts(CRModel):
    by_phase: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Entries by MOUS phase, plus Waiting (no MOUS yet) and Skipped (no MOUS: a problem with the entry)."""
    by_outcome: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Finished entries: Delivered, NeedsReview, Failed, Skipped."""
    by_failure_class: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Entries whose MOUS failed (now or finally), or that were skipped, by failure class."""
    remediations_by_class: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Remediations done (retries asked for), by the class of failure they answered."""


class EntryStatus(CRModel):
    """One input of the campaign, as the operator last saw it."""

    index: Annotated[int, Field(ge=0)]
    name: str
    mous: str | None = None
    """The MOUS made for it (absent for a skipped entry)."""
    state: str = "Waiting"
    """Waiting, the MOUS's phase, or Skipped."""
    outcome: str | None = None
    """Once finished: Delivered, NeedsReview, Failed or Skipped."""
    reason: Annotated[str, Field(max_length=128)] = ""
    """The precise reason of a failure or a skip (InputMissing, Duplicate, CalibrationFailed, OOMKilled...)."""
    failure_class: Annotated[str, Field(max_length=64)] = ""
    message: Annotated[str, Field(max_length=1024)] = ""
    remediations: Annotated[int, Field(ge=0)] = 0
    seconds: Annotated[float | None, Field(ge=0)] = None
    """Processing time of its MOUS (first stage start to last stage end), once finished."""


class CampaignReport(CRModel):
    finished_at: AwareDatetime
    entries: Annotated[int, Field(ge=0)]
    delivered: Annotated[int, Field(ge=0)]
    success_rate: Annotated[float, Field(ge=0, le=1)]
    """Delivered / entries that name a valid, distinct dataset (skipped entries left out)."""
    median_seconds_per_dataset: Annotated[float | None, Field(ge=0)] = None
    mean_seconds_per_dataset: Annotated[float | None, Field(ge=0)] = None
    wall_seconds: Annotated[float | None, Field(ge=0)] = None
    failures_by_class: dict[str, Annotated[int, Field(ge=0)]] = {}
    deadline_met: bool | None = None
    json_uri: str | None = None
    html_uri: str | None = None


class MOUSCampaignStatus(CRModel):
    phase: Literal["Pending", "Running", "Finished"] = "Pending"
    entries: Annotated[int, Field(ge=0)] = 0
    in_flight: Annotated[int, Field(ge=0)] = 0
    counts: PhaseCounts | None = None
    items: list[EntryStatus] = []
    started_at: AwareDatetime | None = None
    report: CampaignReport | None = None
    conditions: list[Condition] = []
    message: Annotated[str, Field(max_length=4096)] = ""
    observed_generation: Annotated[int | None, Field(ge=0)] = None

    @classmethod
    def from_stored(cls, raw: dict) -> MOUSCampaignStatus:
        known = {f.alias or n for n, f in cls.model_fields.items()}
        return cls.model_validate({k: v for k, v in raw.items() if k in known})


class MOUSCampaignResource(CRModel):
    api_version: Annotated[Literal["mousflow.io/v1alpha1"], Field(alias="apiVersion")] = "mousflow.io/v1alpha1"
    kind: Literal["MOUSCampaign"] = CAMPAIGN_KIND
    metadata: ObjectMeta
    spec: MOUSCampaignSpec
    status: MOUSCampaignStatus | None = None
