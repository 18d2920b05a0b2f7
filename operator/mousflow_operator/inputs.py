"""Checks of a MOUS before processing: the spec's semantics, and its execution blocks in storage.

A spec problem leaves the MOUS where it is with a Degraded condition (a person must fix the spec); an
execution block that is absent ends the MOUS Failed with reason InputMissing, one that is there but unusable
(not a processing set, no target scans, a band its frequencies contradict, the same data as another) Failed
with InvalidInput, once, without retries; storage that cannot be reached at all is a Degraded condition too
(it may come back). The execution blocks pass the same checks as in `mousflow validate` and `mousflow run`
(mousflow.stages.inputs), except reading the data back against its checksums: the calibration stage does
that as it reads it, so the operator never downloads whole execution blocks.

At scale (bench/control_plane.py): the check of one execution block reads its metadata and its antenna,
frequency and phase-centre arrays (with zarr alone: the operator never loads xarray, about 165 MB), while
everything else the operator does for a MOUS costs milliseconds. So each execution block's verdict is kept
(`InputChecker`), keyed by its location, the spec fields the check depends on (band, recipe) and the
fingerprint of its root metadata (zarr.json's size and ETag or modification time, one HEAD): a thousand
MOUSs naming the same execution block, or a MOUS checked again after an operator restart, cost one check and a
HEAD each. A store rewritten in place changes its zarr.json
(and so its fingerprint). Unreadable storage is never kept: it is asked again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from mousflow.errors import InputMissing, InvalidInput
from mousflow.model import MOUSSpec, check_spec_semantics
from mousflow.stages.inputs import check_execution_block, check_spec, pointing_across_blocks
from mousflow.storage.location import Location, classify_failure


def spec_problems(spec: MOUSSpec) -> tuple[str, ...]:
    return tuple(str(p) for p in check_spec_semantics(spec))


@dataclass(frozen=True)
class InputCheck:
    state: str
    """"ok", "missing" or "invalid" (Failed) or "unreadable" (Degraded, checked again later)."""
    message: str = ""


@dataclass(frozen=True)
class _Verdict:
    state: str
    """"ok", "missing" or "invalid\""""
    digest: str = ""
    message: str = ""
    target_fields: tuple = ()


def _fingerprint(uri: str) -> str | None:
    """Size and ETag (S3) or modification time of the processing set's root zarr.json; None if there is none
    (then the full check says what is wrong)."""
    meta = Location.of(uri).join("zarr.json")
    try:
        info = meta.fs.info(meta.path)
    except FileNotFoundError:
        return None
    return f"{info.get('size')}/{info.get('ETag') or info.get('etag') or info.get('mtime') or info.get('LastModified')}"


class InputChecker:
    """mousflow.stages.inputs.check_inputs (verify=False) with each execution block's verdict kept."""

    def __init__(self, max_entries: int = 20000):
        self.lock = threading.Lock()
        self.verdicts: OrderedDict[tuple, _Verdict] = OrderedDict()
        self.max_entries = max_entries
        self.pending: dict[tuple, threading.Lock] = {}
        self.full_checks = 0

    def _block(self, spec: MOUSSpec, index: int) -> _Verdict:
        eb = spec.execution_blocks[index]
        fingerprint = _fingerprint(eb.uri)
        key = (eb.uri, str(spec.band), str(spec.recipe), fingerprint) if fingerprint else None
        if key is None:
            return self._check_block(spec, index, None)
        with self.lock:
            hit = self.verdicts.get(key)
            if hit is not None:
                self.verdicts.move_to_end(key)
                return hit
            # one check per key at a time: MOUSs arriving together with the same data wait for the first
            # check instead of all making it at once
            pending = self.pending.setdefault(key, threading.Lock())
        with pending:
            with self.lock:
                hit = self.verdicts.get(key)
            if hit is not None:
                return hit
            try:
                return self._check_block(spec, index, key)
            finally:
                with self.lock:
                    self.pending.pop(key, None)

    def _check_block(self, spec: MOUSSpec, index: int, key: tuple | None) -> _Verdict:
        with self.lock:
            self.full_checks += 1
        try:
            block = check_execution_block(spec, index, verify=False, open_data=False)
            verdict = _Verdict("ok", digest=block.digest, target_fields=tuple(block.target_fields))
        except InputMissing as exc:
            verdict = _Verdict("missing", message=str(exc))
        except InvalidInput as exc:
            verdict = _Verdict("invalid", message=str(exc))
        if key is not None:
            with self.lock:
                self.verdicts[key] = verdict
                while len(self.verdicts) > self.max_entries:
                    self.verdicts.popitem(last=False)
        return verdict

    def check(self, spec: MOUSSpec) -> InputCheck:
        """The checks of mousflow.stages.inputs (the spec, each execution block, then no two holding the same
        data), as check_inputs(spec, verify=False) makes them."""
        verdicts: list[_Verdict] = []
        try:
            check_spec(spec)
            for i in range(len(spec.execution_blocks)):
                verdict = self._block(spec, i)
                if verdict.state != "ok":  # as check_inputs: the first bad execution block, in order
                    return InputCheck(verdict.state, verdict.message)
                verdicts.append(verdict)
        except InputMissing as exc:
            return InputCheck("missing", str(exc))
        except InvalidInput as exc:
            return InputCheck("invalid", str(exc))
        except Exception as exc:  # storage that cannot be reached or read: it may come back
            return InputCheck("unreadable", f"cannot read the execution blocks: {classify_failure(exc)}")
        seen: dict[str, int] = {}
        for i, v in enumerate(verdicts):
            first = seen.setdefault(v.digest, i)
            if first != i:
                a, b = spec.execution_blocks[first], spec.execution_blocks[i]
                return InputCheck("invalid", f"execution blocks {a.uid} and {b.uid} hold the same data ({a.uri} and "
                                             f"{b.uri}): list each execution block once")
        apart = pointing_across_blocks([(eb.uid, list(v.target_fields))
                                        for eb, v in zip(spec.execution_blocks, verdicts, strict=True)])
        if apart:
            return InputCheck("invalid", apart)
        return InputCheck("ok", f"{len(verdicts)} execution blocks present and valid")


_DEFAULT = InputChecker()


def check_execution_blocks(spec: MOUSSpec, checker: InputChecker | None = None) -> InputCheck:
    """The checks of mousflow.stages.inputs (each execution block, then no two holding the same data)."""
    return (checker or _DEFAULT).check(spec)
