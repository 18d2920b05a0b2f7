"""The MOUS spec: what was observed, where its data is, and what the PI asked for."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from mousflow.model.base import CRModel

# ALMA archive UIDs: uid://A001/X1296/X133 (hexadecimal parts).
UID_PATTERN = r"^uid://A[0-9]{3}/X[0-9a-fA-F]+/X[0-9a-fA-F]+$"
# ALMA project codes: 2023.1.01234.S (cycle year, cycle, number, type letter).
PROJECT_CODE_PATTERN = r"^[0-9]{4}\.[0-9]\.[0-9]{5}\.[A-Z]$"
# Data and product locations: an object-store URL, a file URL or an absolute path.
URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.*|/.*)$"


class Recipe(StrEnum):
    """Which pipeline recipe processes the MOUS."""

    CALIBRATE_IMAGE = "calibrate+image"
    IMAGE_ONLY = "image-only"


class ExecutionBlockRef(CRModel):
    """One execution block: its archive UID and the MSv4 processing set (Zarr) that holds its visibilities."""

    uid: Annotated[str, Field(pattern=UID_PATTERN)]
    uri: Annotated[str, Field(pattern=URI_PATTERN, max_length=1024)]


class ResolutionRange(CRModel):
    """Accepted synthesized-beam size, sqrt(bmaj*bmin), in arcseconds."""

    min_arcsec: Annotated[float, Field(gt=0, le=3600)]
    max_arcsec: Annotated[float, Field(gt=0, le=3600)]


class ScienceGoal(CRModel):
    """A science goal as the proposal states it; QA2 compares the products with it."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    sensitivity_jy: Annotated[float, Field(gt=0, le=1000)]
    """Requested rms noise, Jy/beam, in an image of `sensitivity_bandwidth_hz`."""
    sensitivity_bandwidth_hz: Annotated[float, Field(gt=0, le=1e11)]
    resolution: ResolutionRange
    representative_frequency_hz: Annotated[float, Field(ge=3.0e10, le=1.0e12)]


class CalibratorFlux(CRModel):
    """A calibrator's flux density model, used when an execution block has no flux calibrator scan."""

    field: Annotated[str, Field(min_length=1, max_length=128)]
    flux_jy: Annotated[float, Field(gt=0, le=1000)]
    frequency_hz: Annotated[float, Field(ge=3.0e10, le=1.0e12)]
    spectral_index: Annotated[float, Field(ge=-5, le=5)] = 0.0


class ImagingSpec(CRModel):
    """Optional imaging parameters; unset ones follow the ALMA pipeline heuristics."""

    robust: Annotated[float, Field(ge=-2, le=2)] = 0.5
    channel_chunk: Annotated[int | None, Field(ge=1, le=100000)] = None


class OutputSpec(CRModel):
    """Where the pipeline writes its working data and products."""

    uri: Annotated[str, Field(pattern=URI_PATTERN, max_length=1024)]


class DeliverySpec(CRModel):
    """Where delivered products go, and whether a QA2 Pass is delivered without review.

    `automatic` unset means: follow the namespace's policy.
    """

    uri: Annotated[str | None, Field(pattern=URI_PATTERN, max_length=1024)] = None
    automatic: bool | None = None


class MOUSSpec(CRModel):
    """Spec of a MOUS custom resource."""

    uid: Annotated[str, Field(pattern=UID_PATTERN)]
    project_code: Annotated[str, Field(pattern=PROJECT_CODE_PATTERN)]
    band: Annotated[int, Field(ge=1, le=10)]
    execution_blocks: Annotated[list[ExecutionBlockRef], Field(min_length=1, max_length=100)]
    science_goals: Annotated[list[ScienceGoal], Field(min_length=1, max_length=20)]
    recipe: Recipe = Recipe.CALIBRATE_IMAGE
    priority: Annotated[int, Field(ge=0, le=100)] = 50
    """Higher runs first among MOUSs with the same deadline."""
    fully_observed_at: AwareDatetime
    output: OutputSpec
    delivery: DeliverySpec | None = None
    imaging: ImagingSpec | None = None
    calibrator_fluxes: Annotated[list[CalibratorFlux] | None, Field(max_length=50)] = None


def uid_digest(uid: str) -> str:
    """A MOUS's short id for names and labels (DNS- and label-safe, 10 hex characters of sha256(uid)): its stage
    Jobs' label mousflow.io/mous and names, its history records' names. An archive uid ('uid://A001/X1/X2')
    is not allowed in either."""
    return hashlib.sha256(uid.encode()).hexdigest()[:10]
