"""Bad input, row by row: each row makes one bad input, runs the `mousflow` command a careless user would run on
it, and asserts what the user must get: the classified exit code, exactly one error line on stderr containing
the row's message (no traceback anywhere), and the inputs byte for byte as they were.

Rows decided at input time run `mousflow validate` (or the refusal of `run`, `stage`, `simulate`, ... before
they start) in this process, on a copy of the session's tiny MOUS; rows that need the pipeline to run are
marked `slow`. Exit codes: 2 Usage, 3 InputMissing, 4 InvalidInput, 5 CalibrationFailed, 6 ImagingFailed,
7 Unavailable, 8 Busy (mousflow.errors).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import psutil
import pytest
from bad_input_harness import (
    REPO,
    TARGET,
    Outcome,
    Workspace,
    closed_port,
    full_disk,
    run_mousflow,
    tree_fingerprint,
)
from s3_stub import StubS3

USAGE, MISSING, INVALID, CALIBRATION, IMAGING, UNAVAILABLE, BUSY, ACCESS_DENIED = 2, 3, 4, 5, 6, 7, 8, 10


@dataclass(frozen=True)
class Case:
    id: str
    how: str
    make: Callable[[Workspace], list[str]]
    """Makes the bad input in the workspace; returns the command line."""
    code: int
    message: str
    slow: bool = False
    subprocess: bool = False
    run: Callable[[Workspace, list[str], object], Outcome] | None = None
    """How to run the command, when the row needs more than running it once."""


def validate(edit=None, name="mous.yaml"):
    return lambda ws: ["validate", ws.manifest(edit, name)]


def set_spec(key, value):
    def edit(doc):
        doc["spec"][key] = value
    return edit


def set_goal(key, value):
    def edit(doc):
        doc["spec"]["scienceGoals"][0][key] = value
    return edit


def with_eb_uri(uri_of):
    """A manifest whose execution block URI is uri_of(ws) (made by it)."""
    return lambda ws: ["validate", ws.manifest(lambda d: d["spec"]["executionBlocks"][0].update(uri=uri_of(ws)))]


def damaged(damage):
    """`mousflow validate` after damage(ws) changed the execution block copy."""
    def make(ws):
        damage(ws)
        return ["validate", ws.manifest()]
    return make


def on_s3(ws, endpoint: str) -> list[str]:
    ws.env(MOUSFLOW_S3_ENDPOINT=endpoint)
    return ["validate", ws.manifest(lambda d: d["spec"]["executionBlocks"][0].update(uri="s3://mous-data/eb.ps.zarr"))]


def s3_stub(ws, **kw) -> StubS3:
    stub = ws.stack.enter_context(StubS3(**kw))
    stub.buckets.add("mous-data")
    return stub


def kubeconfig(ws, server: str) -> str:
    return ws.file("kubeconfig", json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))


def api_refusing(ws) -> str:
    """A Kubernetes API endpoint (plain HTTP on loopback) that answers 401 to everything."""

    class Refuse(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PATCH = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ws.stack.callback(server.server_close)
    ws.stack.callback(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}"


def stage(name, prepare=None, edit=None):
    def make(ws):
        if prepare:
            prepare(ws)
        return ["stage", name, "--manifest", ws.manifest(edit), "--threads", "1"]
    return make


def flag_everything(group, name):
    group["FLAG"][...] = True


def nan_visibilities(group, name):
    group["VISIBILITY"][...] = np.nan


def one_antenna(group, name):
    names = group["baseline_antenna1_name"][...]
    group["baseline_antenna1_name"][...] = np.full_like(names, names[0])
    group["baseline_antenna2_name"][...] = np.full_like(names, names[0])


def two_antennas(group, name):
    a1 = group["baseline_antenna1_name"][...]
    group["baseline_antenna1_name"][...] = np.full_like(a1, "DA41")
    group["baseline_antenna2_name"][...] = np.full_like(a1, "DA42")


def second_block(uri_of):
    def edit_with(ws):
        def edit(doc):
            doc["spec"]["executionBlocks"].append({"uid": "uid://A002/X1001a/X2", "uri": uri_of(ws)})
        return ["validate", ws.manifest(edit)]
    return edit_with


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        lines.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def manifest_in_output(ws) -> list[str]:
    (ws.inp / "runs").mkdir()
    return ["run", "--manifest", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.inp / "runs")),
                                             name="runs/mine.yaml")]


def chunk_to_pipe(ws) -> None:
    path = ws.chunk("WEIGHT")
    path.unlink()
    os.mkfifo(path)


def full_disk_for(ws) -> Path:
    return ws.stack.enter_context(full_disk(ws.root))


# --- rows that need more than one command -----------------------------------------------------------------


def _python_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "flows"), str(REPO / "operator")])}


def concurrent_runs(ws: Workspace, argv: list[str], capfd) -> Outcome:
    """A first `mousflow run` holds the output location; the second (the row's command) must refuse. Then the
    first is killed with SIGKILL while its local Prefect server runs: the server must end with it."""
    holder = subprocess.Popen([sys.executable, "-m", "mousflow.cli", *argv, "--threads", "1"], env=_python_env(),
                              cwd=ws.root, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        lock = ws.out / "output" / "_MOUSFLOW_LOCK"
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text().strip()):
            assert holder.poll() is None, "the first run ended before it held the lock"
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        outcome = run_mousflow(ws, argv, capfd)
        server = None
        while server is None:
            assert holder.poll() is None, "the first run ended before its Prefect server started"
            assert time.monotonic() < deadline, "the first run's Prefect server never started"
            server = next((p for p in psutil.Process(holder.pid).children(recursive=True)
                           if "server" in p.cmdline() and any("prefect" in a for a in p.cmdline())), None)
            time.sleep(0.2)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        gone, _alive = psutil.wait_procs([server], timeout=60)
        if not gone:
            server.kill()
            pytest.fail("the local Prefect server outlived the run that started it (SIGKILL)", pytrace=False)
        return outcome
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def calibrate_then_image(ws: Workspace, argv: list[str], capfd) -> Outcome:
    """Calibration succeeds on garbage it cannot tell from data; imaging must then fail, not deliver NaN."""
    calibration = run_mousflow(ws, ["stage", "calibration", *argv[2:]], capfd)
    assert calibration.code == 0, calibration.stderr
    return run_mousflow(ws, argv, capfd)


def garbage_without_checksums(ws: Workspace) -> None:
    """Random bytes in the target's visibilities of one window, in data without recorded checksums (written by
    other software): nothing tells them from data but the result."""
    ws.random_bytes(ws.chunk("VISIBILITY"))
    (ws.eb() / "mousflow-checksums.json").unlink()


# --- the table ------------------------------------------------------------------------------------------------

ROWS = [
    # command-line misuse
    Case("cli-unknown-subcommand", "a command that does not exist", lambda ws: ["frobnicate"], USAGE,
         "invalid choice: 'frobnicate'"),
    Case("cli-no-subcommand", "no arguments at all", lambda ws: [], USAGE, "the following arguments are required"),
    Case("cli-validate-no-manifest", "validate without its file", lambda ws: ["validate"], USAGE,
         "the following arguments are required: manifest"),
    Case("cli-run-no-manifest", "run without --manifest", lambda ws: ["run"], USAGE, "required: --manifest"),
    Case("cli-unknown-option", "an option validate does not have",
         lambda ws: ["validate", ws.manifest(), "--frobnicate"], USAGE, "unrecognized arguments: --frobnicate"),
    Case("cli-threads-negative", "run --threads -3", lambda ws: ["run", "--manifest", ws.manifest(), "--threads", "-3"],
         USAGE, "argument --threads: a whole number from 1 to 4096, not '-3'"),
    Case("cli-threads-zero", "stage --threads 0",
         lambda ws: ["stage", "calibration", "--manifest", ws.manifest(), "--threads", "0"], USAGE, "not '0'"),
    Case("cli-threads-word", "run --threads many", lambda ws: ["run", "--manifest", ws.manifest(), "--threads", "many"],
         USAGE, "not 'many'"),
    Case("cli-threads-huge", "run --threads 10**9",
         lambda ws: ["run", "--manifest", ws.manifest(), "--threads", "1000000000"], USAGE, "from 1 to 4096"),
    Case("cli-seed-negative", "simulate --seed -1",
         lambda ws: ["simulate", "--preset", "tiny", "--out", str(ws.out / "sim"), "--seed", "-1"], USAGE,
         "argument --seed"),
    Case("cli-seed-fraction", "simulate --seed 1.5",
         lambda ws: ["simulate", "--preset", "tiny", "--out", str(ws.out / "sim"), "--seed", "1.5"], USAGE,
         "not '1.5'"),
    Case("cli-simulate-unknown-preset", "simulate --preset enormous",
         lambda ws: ["simulate", "--preset", "enormous", "--out", str(ws.out / "sim")], INVALID,
         "unknown preset 'enormous'"),
    Case("cli-sensitivity-nan", "import-ms --sensitivity nan",
         lambda ws: ["import-ms", str(ws.inp / "x.ms"), "--out", str(ws.out / "m"), "--sensitivity", "nan"], USAGE,
         "argument --sensitivity: a positive number, not 'nan'"),
    Case("cli-band-eleven", "import-ms --band 11",
         lambda ws: ["import-ms", str(ws.inp / "x.ms"), "--out", str(ws.out / "m"), "--band", "11"], USAGE,
         "an ALMA band from 1 to 10"),
    Case("cli-resolution-negative", "import-ms --resolution -1 2",
         lambda ws: ["import-ms", str(ws.inp / "x.ms"), "--out", str(ws.out / "m"), "--resolution", "-1", "2"],
         USAGE, "argument --resolution"),
    Case("cli-calibrator-flux-short", "import-ms --calibrator-flux with two values",
         lambda ws: ["import-ms", str(ws.inp / "x.ms"), "--out", str(ws.out / "m"), "--calibrator-flux", "J0423",
                     "1.2"], USAGE, "--calibrator-flux takes FIELD"),
    Case("cli-stage-unknown", "stage selfcal", lambda ws: ["stage", "selfcal", "--manifest", ws.manifest()], USAGE,
         "invalid choice: 'selfcal'"),
    Case("cli-review-decision", "review NAME maybe", lambda ws: ["review", "a001-x1", "maybe"], USAGE,
         "invalid choice: 'maybe'"),
    Case("cli-review-name", "review with a name Kubernetes refuses", lambda ws: ["review", "Not_A_Name", "pass"],
         USAGE, "a Kubernetes name"),

    # manifests
    Case("manifest-missing", "validate a file that does not exist", lambda ws: ["validate", str(ws.inp / "nope.yaml")],
         MISSING, "no such manifest file"),
    Case("manifest-directory", "validate a directory", lambda ws: ["validate", str(ws.inp)], INVALID,
         "a directory, not a manifest file"),
    Case("manifest-named-pipe", "validate a named pipe (nobody writes to it)",
         lambda ws: ["validate", ws.fifo("mous.yaml")], INVALID, "not a regular file", subprocess=True),
    Case("manifest-content-is-a-path", "a file whose content is the path of a valid manifest",
         lambda ws: ["validate", ws.file("pointer.yaml", ws.manifest() + "\n")], INVALID,
         "must be a YAML mapping, this is a YAML str"),
    Case("manifest-empty", "an empty file", lambda ws: ["validate", ws.file("empty.yaml", "")], INVALID,
         "this is empty"),
    Case("manifest-list", "a YAML list", lambda ws: ["validate", ws.file("list.yaml", "- a\n- b\n")], INVALID,
         "this is a YAML list"),
    Case("manifest-not-yaml", "broken YAML", lambda ws: ["validate", ws.file("broken.yaml", "spec: [unclosed\n")],
         INVALID, "not YAML"),
    Case("manifest-not-utf8", "bytes that are not UTF-8",
         lambda ws: ["validate", ws.file("latin1.yaml", b"apiVersion: mousflow.io/v1alpha1\nkind: \xff\xfe\n")],
         INVALID, "not UTF-8 text"),
    Case("manifest-huge-file", "a 2 MiB manifest",
         lambda ws: ["validate", ws.file("huge.yaml", "# " + "x" * (2 * 2**20) + "\n")], INVALID,
         "a MOUS manifest is at most"),
    Case("manifest-huge-field", "a 5,000-character science goal name", validate(set_goal("name", "x" * 5000)),
         INVALID, "at most 128 characters"),
    Case("manifest-alias-bomb", "a billion-laughs YAML", lambda ws: ["validate", ws.file("lol.yaml", billion_laughs())],
         INVALID, "YAML aliases"),
    Case("manifest-deep-nesting", "100,000 nested lists", lambda ws: ["validate", ws.file("deep.yaml", "[" * 100000)],
         INVALID, "100,000 '[' and '{' (flow collections)"),
    Case("manifest-nested-lists", "900 nested lists",
         lambda ws: ["validate", ws.file("nest.yaml", "[" * 900 + "]" * 900)],
         INVALID, "nested too deeply"),
    Case("manifest-band-word", "band: three", validate(set_spec("band", "three")), INVALID,
         "spec.band: Input should be a valid integer"),
    Case("manifest-priority-fraction", "priority: 1.5", validate(set_spec("priority", 1.5)), INVALID,
         "spec.priority"),
    Case("manifest-blocks-mapping", "executionBlocks as a mapping",
         validate(set_spec("executionBlocks", {"uid": "uid://A002/X1/X1"})), INVALID, "spec.executionBlocks"),
    Case("manifest-unknown-field", "a field the schema does not have", validate(set_spec("colour", "red")), INVALID,
         "Extra inputs are not permitted"),
    Case("manifest-no-spec", "no spec", validate(lambda d: d.pop("spec")), INVALID, "spec: Field required"),
    Case("manifest-wrong-kind", "kind: Pod", validate(lambda d: d.update(kind="Pod")), INVALID, "kind"),
    Case("manifest-bad-uid", "a MOUS UID without uid://", validate(set_spec("uid", "A001/X1/X2")), INVALID,
         "spec.uid: String should match pattern"),
    Case("manifest-placeholder", "an import placeholder left in",
         validate(set_spec("projectCode", "FILL IN: the project code")), INVALID, "manifest not complete"),
    Case("manifest-negative-sensitivity", "sensitivityJy: -1", validate(set_goal("sensitivityJy", -1)), INVALID,
         "greater than 0"),
    Case("manifest-http-scheme", "an execution block at http://",
         with_eb_uri(lambda ws: "http://example.org/eb.ps.zarr"), INVALID, "should match pattern"),
    Case("manifest-gs-scheme", "an execution block at gs://", with_eb_uri(lambda ws: "gs://bucket/eb.ps.zarr"),
         INVALID, "should match pattern"),
    Case("manifest-relative-output", "a relative output path",
         validate(lambda d: d["spec"]["output"].update(uri="out/dir")), INVALID, "spec.output.uri"),
    Case("manifest-output-traversal", "an output path climbing with ..",
         lambda ws: ["validate",
                     ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.out / ".." / ".." / "etc")))],
         INVALID, "contains '..'"),
    Case("manifest-eb-traversal", "an execution block path with ..",
         with_eb_uri(lambda ws: str(ws.out / ".." / "in" / "eb.ps.zarr")), INVALID, "contains '..'"),
    Case("manifest-control-character", "an output path with a tab in it",
         lambda ws: ["validate", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.out / "a\tb")))],
         INVALID, "control characters"),
    Case("manifest-future-date", "fullyObservedAt in 2099",
         validate(set_spec("fullyObservedAt", "2099-01-01T00:00:00Z")), INVALID, "is in the future"),
    Case("manifest-duplicate-uid", "the same execution block listed twice",
         validate(lambda d: d["spec"]["executionBlocks"].append(dict(d["spec"]["executionBlocks"][0]))), INVALID,
         "execution block listed twice"),
    Case("manifest-inverted-resolution", "minArcsec > maxArcsec",
         validate(set_goal("resolution", {"minArcsec": 2.0, "maxArcsec": 1.0})), INVALID, "range is inverted"),
    Case("manifest-frequency-outside-band", "band 7 for a 97 GHz goal", validate(set_spec("band", 7)), INVALID,
         "is outside band 7"),
    Case("manifest-output-inside-input", "output.uri inside the input .ps.zarr",
         lambda ws: ["validate", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.eb() / "output")))],
         INVALID, "is inside spec.executionBlocks[0].uri"),
    Case("manifest-output-is-input", "output.uri equal to the input",
         lambda ws: ["validate", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.eb())))], INVALID,
         "is the same location as spec.executionBlocks[0].uri"),
    Case("manifest-output-contains-input", "output.uri a parent of the input",
         lambda ws: ["validate", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.inp)))], INVALID,
         "contains spec.executionBlocks[0].uri"),
    Case("manifest-delivery-inside-input", "delivery.uri inside the input",
         lambda ws: ["validate", ws.manifest(lambda d: d["spec"]["delivery"].update(uri=str(ws.eb() / "d")))],
         INVALID, "spec.delivery.uri"),
    Case("manifest-output-link-to-input", "output.uri a symbolic link to the input",
         lambda ws: (os.symlink(ws.eb(), ws.out / "link"),
                     ["validate", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.out / "link")))])[1],
         INVALID, "is the same location as"),

    # data
    Case("data-eb-missing", "an execution block that does not exist",
         with_eb_uri(lambda ws: str(ws.inp / "gone.ps.zarr")), MISSING, "gone.ps.zarr does not exist"),
    Case("data-eb-named-pipe", "an execution block URI that is a named pipe",
         with_eb_uri(lambda ws: ws.fifo("pipe.ps.zarr")), INVALID, "it is a named pipe", subprocess=True),
    Case("data-eb-regular-file", "an execution block URI that is a file",
         with_eb_uri(lambda ws: ws.file("file.ps.zarr", "not zarr")), INVALID, "it is a regular file"),
    Case("data-eb-empty-directory", "an empty directory",
         with_eb_uri(lambda ws: (ws.inp / "empty.ps.zarr").mkdir() or str(ws.inp / "empty.ps.zarr")), INVALID,
         "a directory without zarr.json"),
    Case("data-eb-a-partition", "a partition of a processing set instead of the set",
         with_eb_uri(lambda ws: str(next(ws.eb().glob(f"*{TARGET}")))), INVALID, "of type 'visibility'"),
    Case("data-root-metadata-garbage", "the processing set's zarr.json overwritten with garbage",
         damaged(lambda ws: (ws.eb() / "zarr.json").write_text("{not json")), INVALID, "zarr.json is damaged"),
    Case("data-array-metadata-garbage", "VISIBILITY/zarr.json overwritten with garbage",
         damaged(lambda ws: (ws.chunk("VISIBILITY").parents[4] / "zarr.json").write_text("{]")), INVALID,
         f"{TARGET}/VISIBILITY/zarr.json does not match the checksum"),
    Case("data-visibility-random", "a VISIBILITY chunk overwritten with random bytes of its size",
         damaged(lambda ws: ws.random_bytes(ws.chunk("VISIBILITY"))), INVALID,
         "VISIBILITY/c/0/0/0/0 does not match the checksum recorded when it was written"),
    Case("data-visibility-truncated", "a VISIBILITY chunk cut to half its size",
         damaged(lambda ws: os.truncate(ws.chunk("VISIBILITY"), ws.chunk("VISIBILITY").stat().st_size // 2)),
         INVALID, "VISIBILITY/c/0/0/0/0 does not match the checksum"),
    Case("data-visibility-missing", "a VISIBILITY chunk deleted", damaged(lambda ws: ws.chunk("VISIBILITY").unlink()),
         INVALID, "VISIBILITY/c/0/0/0/0 is missing"),
    Case("data-uvw-random", "a UVW chunk overwritten with random bytes",
         damaged(lambda ws: ws.random_bytes(ws.chunk("UVW"))), INVALID, "UVW/c/0/0/0 does not match the checksum"),
    Case("data-flag-random", "a FLAG chunk overwritten with random bytes",
         damaged(lambda ws: ws.random_bytes(ws.chunk("FLAG"))), INVALID, "FLAG/c/0/0/0/0 does not match"),
    Case("data-weight-random", "a WEIGHT chunk overwritten with random bytes",
         damaged(lambda ws: ws.random_bytes(ws.chunk("WEIGHT"))), INVALID, "WEIGHT/c/0/0/0/0 does not match"),
    Case("data-weight-truncated", "a WEIGHT chunk truncated to nothing",
         damaged(lambda ws: os.truncate(ws.chunk("WEIGHT"), 0)), INVALID, "WEIGHT/c/0/0/0/0 does not match"),
    Case("data-flag-missing", "a FLAG chunk deleted", damaged(lambda ws: ws.chunk("FLAG").unlink()), INVALID,
         "FLAG/c/0/0/0/0 is missing"),
    Case("data-file-added", "a stray chunk added", damaged(lambda ws: (ws.chunk("UVW").parent / "9").write_bytes(b"x")),
         INVALID, "was added after the data was written"),
    Case("data-chunk-named-pipe", "a chunk replaced by a named pipe", damaged(chunk_to_pipe), INVALID,
         "is a named pipe, not a regular file", subprocess=True),
    Case("data-checksums-garbage", "the recorded checksums overwritten with garbage",
         damaged(lambda ws: (ws.eb() / "mousflow-checksums.json").write_text("[1, 2")), INVALID,
         "the recorded checksums are unreadable"),
    Case("data-no-target-scans", "an execution block without OBSERVE_TARGET scans",
         damaged(lambda ws: ws.remove_partitions(keep=lambda name: "CDFS_field" not in name)), INVALID,
         "no science target (OBSERVE_TARGET) scans"),
    Case("data-no-bandpass-scans", "an execution block without bandpass calibrator scans",
         damaged(lambda ws: ws.remove_partitions(keep=lambda name: "J0522-3627" not in name)), INVALID,
         "no CALIBRATE_BANDPASS scans"),
    Case("data-one-antenna", "every baseline of one antenna with itself", damaged(lambda ws: ws.rewrite(one_antenna)),
         INVALID, "no baselines between different antennas"),
    Case("data-two-antennas", "every baseline between the same two antennas",
         damaged(lambda ws: ws.rewrite(two_antennas)), INVALID, "only 2 antennas (DA41, DA42)"),
    Case("data-band-contradiction", "band 7 declared (and a 300 GHz goal) for 97 GHz data",
         validate(lambda d: (d["spec"].update(band=7),
                             d["spec"]["scienceGoals"][0].update(representativeFrequencyHz=3.0e11))), INVALID,
         "spec.band 7 contradicts the data"),
    Case("data-duplicate-content", "the same data under a second execution-block UID (a copy)",
         second_block(lambda ws: str(shutil.copytree(ws.eb(), ws.inp / "copy.ps.zarr"))), INVALID,
         "hold the same data"),
    Case("data-duplicate-uri", "the same URI under two execution-block UIDs",
         second_block(lambda ws: str(ws.eb())), INVALID, "hold the same data"),
    Case("data-all-flagged", "every sample flagged (written as such)",
         stage("calibration", prepare=lambda ws: ws.rewrite(flag_everything)), CALIBRATION, "no unflagged data"),
    Case("data-all-nan", "every visibility NaN (written as such)",
         stage("calibration", prepare=lambda ws: ws.rewrite(nan_visibilities)), CALIBRATION, "no unflagged data"),

    # commands that refuse before they start
    Case("run-output-inside-input", "run with output.uri inside the input",
         lambda ws: ["run", "--manifest", ws.manifest(lambda d: d["spec"]["output"].update(uri=str(ws.eb() / "o")))],
         INVALID, "the run would write into its input"),
    Case("run-future-date", "run a MOUS observed in 2099",
         lambda ws: ["run", "--manifest", ws.manifest(set_spec("fullyObservedAt", "2099-01-01T00:00:00Z"))], INVALID,
         "is in the future"),
    Case("run-manifest-inside-output", "run a manifest kept inside its own output location", manifest_in_output,
         INVALID, "is inside its own output location"),
    Case("run-output-under-a-file", "run with its output location under a regular file",
         lambda ws: ["run", "--manifest", ws.manifest(lambda d: d["spec"]["output"].update(
             uri=str(Path(ws.file("a-file", "x")) / "output")))], INVALID, "cannot be an output location"),
    Case("run-eb-named-pipe", "run with an execution block URI that is a named pipe",
         lambda ws: ["run", "--manifest",
                     ws.manifest(lambda d: d["spec"]["executionBlocks"][0].update(uri=ws.fifo("p.ps.zarr")))],
         INVALID, "it is a named pipe", subprocess=True),
    Case("stage-damaged-chunk", "stage calibration on a damaged VISIBILITY chunk",
         stage("calibration", prepare=lambda ws: ws.random_bytes(ws.chunk("VISIBILITY"))), INVALID,
         "does not match the checksum"),
    Case("stage-imaging-first", "stage imaging before calibration", stage("imaging"), MISSING,
         "run calibration first"),
    Case("stage-no-manifest", "stage with a manifest that does not exist",
         lambda ws: ["stage", "calibration", "--manifest", str(ws.inp / "nope.yaml")], MISSING, "does not exist"),
    Case("import-ms-missing", "import-ms of a path that does not exist",
         lambda ws: ["import-ms", str(ws.inp / "nope.ms"), "--out", str(ws.out / "m")], MISSING,
         "no such Measurement Set"),
    Case("import-ms-processing-set", "import-ms of an MSv4 processing set (not an MSv2)",
         lambda ws: ["import-ms", str(ws.eb()), "--out", str(ws.out / "m")], INVALID, "not a Measurement Set"),
    Case("import-ms-named-pipe", "import-ms of a named pipe",
         lambda ws: ["import-ms", ws.fifo("pipe.ms"), "--out", str(ws.out / "m")], INVALID,
         "not a Measurement Set", subprocess=True),

    # object storage
    Case("s3-unreachable-validate", "execution block in S3, endpoint a closed loopback port",
         lambda ws: on_s3(ws, f"http://127.0.0.1:{closed_port()}"), UNAVAILABLE, "cannot reach the object store"),
    Case("s3-unreachable-simulate", "simulate to S3, endpoint a closed loopback port",
         lambda ws: (ws.env(MOUSFLOW_S3_ENDPOINT=f"http://127.0.0.1:{closed_port()}"),
                     ["simulate", "--preset", "tiny", "--out", "s3://mous-data/sim"])[1], UNAVAILABLE,
         "cannot reach the object store"),
    Case("s3-unreachable-run", "run with its execution block in S3, endpoint a closed loopback port",
         lambda ws: ["run", "--manifest", on_s3(ws, f"http://127.0.0.1:{closed_port()}")[1]], UNAVAILABLE,
         "cannot reach the object store"),
    Case("s3-credentials-refused-validate", "execution block in S3, credentials the store refuses",
         lambda ws: on_s3(ws, s3_stub(ws, refuse_credentials=True).url), ACCESS_DENIED, "access refused"),
    Case("s3-credentials-refused-simulate", "simulate to S3, credentials the store refuses",
         lambda ws: (ws.env(MOUSFLOW_S3_ENDPOINT=s3_stub(ws, refuse_credentials=True).url),
                     ["simulate", "--preset", "tiny", "--out", "s3://mous-data/sim"])[1], ACCESS_DENIED,
         "access refused"),
    Case("s3-eb-missing", "execution block in S3 where there is none", lambda ws: on_s3(ws, s3_stub(ws).url), MISSING,
         "s3://mous-data/eb.ps.zarr does not exist"),

    # full disk
    Case("disk-full-simulate", "simulate onto a full disk",
         lambda ws: ["simulate", "--preset", "tiny", "--out", str(full_disk_for(ws) / "sim")], UNAVAILABLE,
         "no space left on device"),
    Case("disk-full-calibration", "stage calibration with its output on a full disk",
         lambda ws: ["stage", "calibration", "--threads", "1", "--manifest",
                     ws.manifest(lambda d: d["spec"]["output"].update(uri=str(full_disk_for(ws) / "output")))],
         UNAVAILABLE, "no space left on device"),

    # Kubernetes
    Case("kube-config-garbage", "review with KUBECONFIG full of random bytes",
         lambda ws: (ws.env(KUBECONFIG=ws.file("kubeconfig", np.random.default_rng(1).bytes(300))),
                     ["review", "a001-x1001-x2", "pass"])[1], INVALID, "cannot use the Kubernetes configuration"),
    Case("kube-config-missing", "retry with KUBECONFIG naming no file",
         lambda ws: (ws.env(KUBECONFIG=str(ws.inp / "none")), ["retry", "a001-x1001-x2"])[1], INVALID,
         "cannot use the Kubernetes configuration"),
    Case("kube-unreachable-review", "review with the API server a closed loopback port",
         lambda ws: (ws.env(KUBECONFIG=kubeconfig(ws, f"https://127.0.0.1:{closed_port()}")),
                     ["review", "a001-x1001-x2", "pass"])[1], UNAVAILABLE, "cannot reach the Kubernetes API"),
    Case("kube-unreachable-operator", "operator with the API server a closed loopback port",
         lambda ws: (ws.env(KUBECONFIG=kubeconfig(ws, f"https://127.0.0.1:{closed_port()}")), ["operator"])[1],
         UNAVAILABLE, "cannot reach the Kubernetes API"),
    Case("kube-credentials-refused", "retry against an API server that refuses the token",
         lambda ws: (ws.env(KUBECONFIG=kubeconfig(ws, api_refusing(ws))), ["retry", "a001-x1001-x2"])[1],
         UNAVAILABLE, "refused mous default/a001-x1001-x2 (HTTP 401"),

    # rows that run the pipeline
    Case("run-concurrent", "two runs of the same manifest at once; then the first SIGKILLed",
         lambda ws: ["run", "--manifest", ws.manifest()], BUSY, "is in use by mousflow run of", slow=True,
         run=concurrent_runs),
    Case("run-damaged-chunk", "run on a VISIBILITY chunk overwritten with random bytes",
         lambda ws: (ws.random_bytes(ws.chunk("VISIBILITY")),
                     ["run", "--manifest", ws.manifest(), "--threads", "1"])[1], INVALID,
         "stage calibration failed: execution block uid://A002/X1001a/X1", slow=True, subprocess=True),
    Case("run-garbage-unchecked", "random visibilities in data without recorded checksums: calibrated, then imaged",
         lambda ws: (garbage_without_checksums(ws),
                     ["stage", "imaging", "--manifest", ws.manifest(), "--threads", "1"])[1],
         IMAGING, "every channel's image is NaN", slow=True, run=calibrate_then_image),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in ROWS])
def test_bad_input(case: Case, workspace: Workspace, capfd):
    ws = workspace
    ws.subprocess = case.subprocess
    with contextlib.ExitStack() as ws.stack:
        argv = case.make(ws)
        before = tree_fingerprint(ws.inp)
        outcome = (case.run or (lambda w, a, c: run_mousflow(w, a, c)))(ws, argv, capfd)
        after = tree_fingerprint(ws.inp)
    lines = outcome.error_lines
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.stderr + outcome.stdout
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n" + "\n".join(lines)
    assert case.message in lines[0], lines[0]
    assert lines[0].startswith("mousflow: error: "), lines[0]
    assert outcome.code == case.code, f"exit code {outcome.code}, expected {case.code}: {lines[0]}"
    assert after == before, f"the inputs changed: {sorted(set(before.items()) ^ set(after.items()))[:5]}"


def test_the_table_is_big_enough_and_fast_enough():
    assert len(ROWS) >= 60 and len({c.id for c in ROWS}) == len(ROWS)
    assert sum(c.slow for c in ROWS) <= 6
