"""A MOUSCampaign on the real test bed, applied with kubectl: good entries delivered, faulty ones classified,
nothing processed twice, an operator restart half way changing nothing.

Entries (CAMPAIGN_GOOD good ones, default 3, and CAMPAIGN_FAULTY of each faulty kind, default 1):
  good       uid + executionBlocks of the session's tiny simulated MOUS (all share that one input copy), one of
             them as a `manifest` entry naming the tiny MOUS's own mous.yaml;
  missing    an execution block that does not exist -> its MOUS Failed InputMissing -> Skipped, BadInput;
  nomanifest a manifest that does not exist -> Skipped InputMissing, no MOUS;
  duplicate  the same uid as a good entry -> Skipped Duplicate, no MOUS;
  flagged    a copy of the tiny execution block with every sample flagged -> CalibrationFailed, final (no retry).
The full-size run (`make campaign-test`: 48 good, 2 of each faulty kind, 56 entries, 52 MOUSs) takes hours on
two cores; `make test` runs the default size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from harness import namespace_report

from mousflow.storage.location import Location
from mousflow.storage.zarr_io import finalize_processing_set

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "campaign"
OPERATOR_ENV = {"MOUSFLOW_CAMPAIGN_TICK_SECONDS": "3", "MOUSFLOW_MAX_PROCESSING": "2"}
GOOD = int(os.environ.get("CAMPAIGN_GOOD", "3"))
FAULTY = int(os.environ.get("CAMPAIGN_FAULTY", "1"))
MAX_IN_FLIGHT = int(os.environ.get("CAMPAIGN_MAX_IN_FLIGHT", "3"))
TIMEOUT = float(os.environ.get("CAMPAIGN_TIMEOUT_SECONDS", str(600 + 420 * GOOD)))
NAME = "reimage"
TERMINAL = ("Delivered", "Failed", "QA2Fail", "Reviewing")


def _flagged_copy(s3_env: dict, tiny_s3_mous: str, tmp: Path) -> dict:
    """The tiny MOUS's execution block with every sample flagged, in S3 next to it: valid data that calibration
    cannot use (CalibrationFailed: no unflagged data). Simulated locally, edited through zarr, uploaded."""
    import zarr

    out = tmp / "flagged"
    env = {**os.environ, **s3_env}
    subprocess.run([sys.executable, "-m", "mousflow.cli", "simulate", "--preset", "tiny", "--out", str(out)],
                   env=env, check=True, capture_output=True, timeout=600)
    eb = yaml.safe_load((out / "mous.yaml").read_text())["spec"]["executionBlocks"][0]
    group = zarr.open_group(eb["uri"], mode="r+")
    for name in sorted(group.group_keys()):
        group[name]["FLAG"][...] = True
    finalize_processing_set(Location.of(eb["uri"]))  # consolidated metadata and checksums, as a writer leaves them
    target = f"{tiny_s3_mous.rsplit('/', 1)[0]}/flagged/{Path(eb['uri']).name}"
    dest = Location.of(target)
    dest.fs.put(eb["uri"], dest.path, recursive=True)
    return {"uid": eb["uid"], "uri": target}


def _campaign(tiny_s3_mous: str, flagged_eb: dict) -> tuple[dict, dict[str, str]]:
    """The campaign manifest and what each entry is expected to end as (entry name -> reason or Delivered)."""
    tiny = yaml.safe_load(Location(f"{tiny_s3_mous}/mous.yaml").read_text())
    shared = {k: v for k, v in tiny["spec"].items() if k not in ("uid", "executionBlocks", "output", "delivery")}
    eb = tiny["spec"]["executionBlocks"]
    bucket_root = tiny_s3_mous.rsplit("/", 1)[0]
    inputs, expected = [], {}
    for i in range(GOOD):
        if i == 0:
            inputs.append({"name": "good-0", "manifest": f"{tiny_s3_mous}/mous.yaml"})
        else:
            inputs.append({"name": f"good-{i}", "uid": f"uid://A001/X2{i:03x}/X{i + 1:x}", "executionBlocks": eb})
        expected[f"good-{i}"] = "Delivered"
    for k in range(FAULTY):
        inputs.append({"name": f"missing-{k}", "uid": f"uid://A001/X3{k:03x}/X1",
                       "executionBlocks": [{"uid": eb[0]["uid"], "uri": f"{bucket_root}/nowhere-{k}/eb.ps.zarr"}]})
        expected[f"missing-{k}"] = "InputMissing"
        inputs.append({"name": f"nomanifest-{k}", "manifest": f"{bucket_root}/nowhere-{k}/mous.yaml"})
        expected[f"nomanifest-{k}"] = "InputMissing"
        inputs.append({"name": f"duplicate-{k}", "uid": f"uid://A001/X2{1:03x}/X2" if GOOD > 1 else tiny["spec"]["uid"],
                       "executionBlocks": eb})
        expected[f"duplicate-{k}"] = "Duplicate"
        inputs.append({"name": f"flagged-{k}", "uid": f"uid://A001/X4{k:03x}/X1", "executionBlocks": [flagged_eb]})
        expected[f"flagged-{k}"] = "CalibrationFailed"
    doc = {"apiVersion": "mousflow.io/v1alpha1", "kind": "MOUSCampaign", "metadata": {"name": NAME},
           "spec": {"inputs": inputs, "maxInFlight": MAX_IN_FLIGHT, "maxRemediations": 2, "backoffSeconds": 10,
                    "template": {"outputPrefix": f"{bucket_root}/campaign",
                                 "deliveryPrefix": f"{bucket_root}/delivered", "automaticDelivery": True,
                                 "spec": shared}}}
    return doc, expected


def _mouses(cluster, ns) -> list[dict]:
    return json.loads(cluster.kubectl("get", "mous", "-n", ns, "-l", f"mousflow.io/campaign={NAME}", "-o",
                                      "json"))["items"]


def test_a_campaign_delivers_the_good_entries_and_classifies_the_faulty_ones(
        cluster, mous_namespace, tiny_s3_mous, s3_env, operator, tmp_path):
    ns = mous_namespace
    flagged_eb = _flagged_copy(s3_env, tiny_s3_mous, tmp_path)
    doc, expected = _campaign(tiny_s3_mous, flagged_eb)
    manifest = tmp_path / "campaign.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    cluster.kubectl("apply", "-n", ns, "-f", str(manifest))

    def failing(what: str) -> str:
        status = cluster.get("mouscampaign", NAME, ns).get("status") or {}
        return (f"{what}\ncampaign status:\n{json.dumps(status, indent=1)[:6000]}\noperator log:\n"
                f"{operator.log_tail(80)}\n{namespace_report(cluster, ns)[-4000:]}")

    # the throttle, watched all along; an operator restart (SIGKILL) once the first MOUSs exist
    most_in_flight, restarted = 0, False
    deadline = time.monotonic() + TIMEOUT
    status: dict = {}
    while time.monotonic() < deadline:
        mouses = _mouses(cluster, ns)
        unfinished = [m for m in mouses if (m.get("status") or {}).get("phase") not in TERMINAL]
        most_in_flight = max(most_in_flight, len(unfinished))
        if not restarted and mouses:
            operator.kill()
            operator.start()
            restarted = True
        status = cluster.get("mouscampaign", NAME, ns).get("status") or {}
        if status.get("phase") == "Finished" and status.get("report"):
            break
        time.sleep(5)
    else:
        raise AssertionError(failing(f"the campaign did not finish in {TIMEOUT:.0f} s"))

    # at most maxInFlight unfinished at once (a Failed MOUS waiting for its remediation counts as unfinished)
    assert most_in_flight <= MAX_IN_FLIGHT, failing(f"{most_in_flight} MOUSs unfinished at once")
    items = {i["name"]: i for i in status["items"]}
    assert set(items) == set(expected), failing("entries")
    for name, want in expected.items():
        item = items[name]
        got = item.get("outcome") if want == "Delivered" else item.get("reason")
        assert got == want, failing(f"entry {name}: {got} != {want}")
    for name in expected:
        if name.startswith("missing"):
            assert items[name]["outcome"] == "Skipped" and items[name]["failureClass"] == "BadInput"
        if name.startswith(("nomanifest", "duplicate")):
            assert items[name]["outcome"] == "Skipped" and "mous" not in items[name], items[name]
        if name.startswith("flagged"):
            assert items[name]["outcome"] == "Failed" and items[name]["remediations"] == 0, items[name]
    assert status["counts"]["byOutcome"] == {"Delivered": GOOD, "Skipped": 3 * FAULTY, "Failed": FAULTY}, status
    assert status["counts"]["byFailureClass"] == {"BadInput": 2 * FAULTY, "Duplicate": FAULTY,
                                                  "CalibrationFailed": FAULTY}, status
    assert not status["counts"].get("remediationsByClass"), status["counts"]

    # nothing processed twice: one MOUS per distinct dataset, one Job per stage of each, one calibration Job
    # (no retry) for the flagged ones, none for the missing ones
    mouses = {m["metadata"]["name"]: m for m in _mouses(cluster, ns)}
    assert len(mouses) == GOOD + 2 * FAULTY, sorted(mouses)
    jobs = json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json"))["items"]
    per_mous: dict[tuple[str, str], int] = {}
    for job in jobs:
        key = (job["metadata"]["annotations"]["mousflow.io/uid"], job["metadata"]["labels"]["mousflow.io/stage"])
        per_mous[key] = per_mous.get(key, 0) + 1
    assert all(n == 1 for n in per_mous.values()), failing(f"stage Jobs run twice: {per_mous}")
    uids = {m["spec"]["uid"]: n for n, m in mouses.items()}
    assert len(uids) == len(mouses)
    for name, m in mouses.items():
        entry = m["metadata"]["annotations"]["mousflow.io/campaign-entry"].split("/", 1)[1]
        stages = {s for (u, s) in per_mous if u == m["spec"]["uid"]}
        if entry.startswith("good"):
            assert stages == {"calibration", "imaging", "packaging"}, (name, stages)
        elif entry.startswith("flagged"):
            assert stages == {"calibration"}, (name, stages)
        else:
            assert stages == set(), (name, stages)
        assert m["metadata"]["ownerReferences"][0]["kind"] == "MOUSCampaign"

    # the final report, in status and as JSON and HTML under the output prefix
    report = status["report"]
    assert report["delivered"] == GOOD and report["entries"] == len(expected)
    assert report["successRate"] == round(GOOD / (GOOD + FAULTY), 4)
    assert report["failuresByClass"] == status["counts"]["byFailureClass"]
    assert report["medianSecondsPerDataset"] > 0
    stored = Location(report["jsonUri"]).read_json()
    assert stored["successRate"] == report["successRate"] and len(stored["entries"]) == len(expected)
    page = Location(report["htmlUri"]).read_text()
    assert "CalibrationFailed" in page and "Duplicate" in page
    for name in (n for n in expected if n.startswith("good")):
        delivered = Location(f"{doc['spec']['template']['deliveryPrefix']}/{NAME}-{name}/manifest.json")
        assert delivered.read_json()["qa2"] == "Pass"
