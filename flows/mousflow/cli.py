"""The `mousflow` command line: simulate MOUSs, run the pipeline locally, inspect manifests."""

from __future__ import annotations

import argparse
import math
import re
import sys
import time

from mousflow import __version__


class UsageError(Exception):
    """A bad command line: exit code 2, and one line saying what is wrong (argparse would print the usage too)."""

    reason = "Usage"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _number(parse, condition, wanted: str):
    """An argparse type: `parse` the text, then require `condition` (a finite number, in range)."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{wanted}, not {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not condition(value):
            raise argparse.ArgumentTypeError(f"{wanted}, not {text!r}")
        return value

    convert.__name__ = wanted  # what argparse names in its message
    return convert


positive_int = _number(int, lambda v: 0 < v <= 4096, "a whole number from 1 to 4096")
non_negative_int = _number(int, lambda v: 0 <= v < 2**32, "a whole number from 0 to 4294967295")
positive_float = _number(float, lambda v: v > 0, "a positive number")
band_number = _number(int, lambda v: 1 <= v <= 10, "an ALMA band from 1 to 10")


def kubernetes_name(text: str) -> str:
    from mousflow.model.resource import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, text) or len(text) > 253:
        raise argparse.ArgumentTypeError(f"a Kubernetes name (lower-case letters, digits, '-' and '.'), not {text!r}")
    return text


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cmd_simulate(args: argparse.Namespace) -> int:
    from mousflow.simulate import simulate_mous

    result = simulate_mous(args.preset, args.out, seed=args.seed, force=args.force, progress=_progress)
    print(f"simulated MOUS ({args.preset}, seed {args.seed}) -> {result.out.uri}")
    print(f"  execution blocks: {len(result.execution_blocks)}")
    print(f"  visibility-channels: {result.visibility_channels:,} in {result.seconds:.1f} s "
          f"({result.rate_per_s / 1e6:.2f} M/s)")
    print(f"  manifest: {result.manifest.uri}")
    print(f"  truth:    {result.truth.uri}")
    return 0


def cmd_import_ms(args: argparse.Namespace) -> int:
    from mousflow.ingest import import_measurement_sets
    from mousflow.ingest.manifest import ImportOptions
    from mousflow.model import CalibratorFlux

    fluxes = []
    for values in args.calibrator_flux or []:
        if len(values) not in (3, 4):
            raise UsageError("--calibrator-flux takes FIELD FLUX_JY FREQUENCY_HZ [SPECTRAL_INDEX]")
        try:
            fluxes.append(CalibratorFlux(field=values[0], flux_jy=float(values[1]), frequency_hz=float(values[2]),
                                         spectral_index=float(values[3]) if len(values) == 4 else 0.0))
        except Exception as exc:  # pydantic's range checks, float() of a non-number
            raise UsageError(f"--calibrator-flux {' '.join(values)}: {str(exc).splitlines()[0]}") from None
    options = ImportOptions(name=args.name, uid=args.uid, project_code=args.project_code, band=args.band,
                            sensitivity_jy=args.sensitivity, sensitivity_bandwidth_hz=args.sensitivity_bandwidth,
                            resolution_arcsec=tuple(args.resolution) if args.resolution else None,
                            calibrator_fluxes=fluxes)
    result = import_measurement_sets(args.ms, args.out, options, force=args.force, progress=_progress)
    print(f"imported {len(result.execution_blocks)} execution block(s) in {result.seconds:.1f} s -> {result.out.uri}")
    for uid, uri in result.execution_blocks:
        print(f"  {uid}: {uri}")
    print(f"  manifest: {result.manifest.uri}")
    if result.placeholders:
        print(f"  to fill in before processing: {', '.join(result.placeholders)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Schema and semantics of the manifest, then (unless --schema-only) its data: every check `run` makes
    before it starts, and the execution blocks read back against their recorded checksums."""
    from mousflow.model import load_manifest_file
    from mousflow.stages.inputs import check_inputs, check_spec

    resource = load_manifest_file(args.manifest)
    spec = resource.spec
    if args.schema_only:
        check_spec(spec)
        data = "data not checked"
    else:
        blocks = check_inputs(spec, verify=True)
        unverified = [b.uid for b in blocks if not b.verified]
        data = "data checked, checksums verified" if not unverified else \
            f"data checked; no checksums recorded for {', '.join(unverified)} (not written by mousflow)"
    print(f"{args.manifest}: valid MOUS {spec.uid} ({len(spec.execution_blocks)} execution blocks; {data})")
    return 0


def cmd_crd(_args: argparse.Namespace) -> int:
    from mousflow_operator.crd import all_crds_text

    sys.stdout.write(all_crds_text())
    return 0


def _exit_on_sigterm() -> None:
    """Stop at once on SIGTERM. A stage is the main process of its container (PID 1 there), and the kernel
    does not apply a signal's default action to PID 1: without a handler a deleted pod would keep computing,
    and writing, through its whole grace period, while its replacement already runs. Completed chunks are
    checkpointed, so stopping mid-chunk loses only that chunk."""
    import signal

    def stop(signum, _frame):
        print(f"mousflow: stage stopped by signal {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def cmd_stage(args: argparse.Namespace) -> int:
    from mousflow.process_env import keep_unused_libraries_out

    keep_unused_libraries_out()  # before the stage's imports bring them
    from mousflow.stages.runner import exit_code, run_stage

    _exit_on_sigterm()
    outcome = run_stage(args.stage, args.manifest, threads=args.threads)
    if outcome.state == "Failed":
        print(f"mousflow: error: {outcome.reason}: stage {outcome.stage} failed: {outcome.message}", file=sys.stderr,
              flush=True)
    else:
        print(f"stage {outcome.stage}: {outcome.state}", flush=True)
    return exit_code(outcome)


def cmd_run(args: argparse.Namespace) -> int:
    """Process one MOUS locally: its stages as local processes, orchestrated by a Prefect flow.

    A failed stage ends the command with that stage's classified exit code and one line on stderr; Prefect's
    records (tracebacks included) go to the run's log file, which the line names (--verbose: also to the
    console)."""
    import contextlib
    import os

    import yaml

    from mousflow.model import load_manifest_file
    from mousflow.pipeline import process_mous
    from mousflow.pipeline.local_server import local_prefect_server
    from mousflow.pipeline.run_log import run_log, run_log_path

    resource = load_manifest_file(args.manifest)
    _refuse_manifest_in_output(args.manifest, resource.spec.output.uri)
    log: dict[str, str] = {}

    @contextlib.contextmanager
    def admitted():
        """Entered once the inputs passed their checks and the output location is locked."""
        log["path"] = run_log_path(resource.spec.output.uri, resource.metadata.name)
        _progress(f"log: {log['path']}")
        with run_log(log["path"], verbose=args.verbose):
            if os.environ.get("PREFECT_API_URL"):
                yield
                return
            with local_prefect_server() as url:
                _progress(f"Prefect API: {url}")
                yield

    text = yaml.safe_dump(resource.to_wire(), sort_keys=False)  # what was validated, not a second read
    result = process_mous(text, threads=args.threads, run_context=admitted)
    return report_result(result, log.get("path"))


def _refuse_manifest_in_output(manifest: str, output_uri: str) -> None:
    """The run writes <output>/mous.yaml (and more) under its output location: a manifest kept there could be
    overwritten or removed. Only that published copy itself may be run again (the run rewrites it, the same
    manifest in its normal form)."""
    import os

    from mousflow.errors import InvalidInput
    from mousflow.storage.location import Location

    output = Location.of(output_uri)
    if not output.is_local:
        return
    here, root = os.path.realpath(manifest), os.path.realpath(output.path)
    if os.path.commonpath([here, root]) == root and here != os.path.join(root, "mous.yaml"):
        raise InvalidInput(f"{manifest} is inside its own output location {output_uri}, where the run writes: "
                           f"keep the manifest elsewhere")


def report_result(result, log_path: str | None = None) -> int:
    from mousflow.errors import exit_code_of

    for outcome in result.outcomes:
        m = outcome.metrics
        print(f"  {outcome.stage:<12} {outcome.state:<10} {m.get('wall_seconds', 0):7.1f} s  "
              f"peak {m.get('peak_memory_bytes', 0) / 2**20:7.0f} MiB")
    if not result.succeeded:
        f = result.failed
        details = f" (details: {log_path})" if log_path else ""
        print(f"mousflow: error: {f.reason or 'Error'}: stage {f.stage} failed: {f.message}{details}",
              file=sys.stderr)
        return exit_code_of(f.reason)
    print(f"QA2 verdict: {result.qa2}")
    print(f"weblog: {result.weblog}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mousflow.demo import run_demo

    return run_demo(workdir=args.workdir, preset=args.preset, seed=args.seed, progress=_progress)


def cmd_operator(args: argparse.Namespace) -> int:
    from mousflow_operator.__main__ import main as operator_main

    return operator_main((["--verbose"] if args.verbose else [])
                         + (["--liveness", args.liveness] if args.liveness else []))


def _annotate_mous(namespace: str, name: str, annotations: dict[str, str], expect_phases: tuple[str, ...]) -> str:
    """Set annotations on a MOUS (what `kubectl annotate` does); returns its phase. A missing MOUS, one in a
    phase where the annotation means nothing, and a cluster that cannot be used are one-line errors, and
    nothing is changed."""
    from kubernetes import client

    from mousflow.errors import InvalidInput
    from mousflow.model import GROUP, PLURAL, VERSION
    from mousflow_operator.cluster import api_failure, load_cluster_config, timeout_seconds

    host = load_cluster_config()
    api = client.CustomObjectsApi()
    what = f"mous {namespace}/{name}"
    try:
        mous = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                _request_timeout=timeout_seconds())
        phase = (mous.get("status") or {}).get("phase", "FullyObserved")
        if phase not in expect_phases:
            raise InvalidInput(f"{what} is {phase}; this applies to {' or '.join(expect_phases)}")
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                           {"metadata": {"annotations": annotations}},
                                           _request_timeout=timeout_seconds())
    except InvalidInput:
        raise
    except Exception as exc:  # the API's refusals and the connection's failures, classified
        raise api_failure(exc, host, what) from None
    return phase


def cmd_review(args: argparse.Namespace) -> int:
    """Record a reviewer's QA2 decision: the same as `kubectl annotate mous NAME mousflow.io/review=DECISION`."""
    _annotate_mous(args.namespace, args.name, {"mousflow.io/review": args.decision}, ("Reviewing",))
    print(f"mous {args.namespace}/{args.name}: review {args.decision}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Ask for a new run of a Failed MOUS: the same as `kubectl annotate mous NAME mousflow.io/retry=TOKEN`.
    The run resumes from the last completed stage (and chunk); a new token is needed for each request."""
    import time

    token = args.token or time.strftime("%Y%m%dT%H%M%S")
    _annotate_mous(args.namespace, args.name, {"mousflow.io/retry": token}, ("Failed",))
    print(f"mous {args.namespace}/{args.name}: retry {token} requested")
    return 0


def _cluster_mouses(namespace: str | None) -> list[dict]:
    """Every MOUS of one namespace (None: all), read once; an unusable configuration or an unreachable or
    refusing cluster is one line (mousflow_operator.cluster)."""
    from kubernetes import client

    from mousflow.model import GROUP, PLURAL, VERSION
    from mousflow_operator.cluster import api_failure, load_cluster_config, timeout_seconds

    host = load_cluster_config()
    api = client.CustomObjectsApi()
    where = f"namespace {namespace}" if namespace else "the cluster"
    try:
        if namespace:
            doc = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                    _request_timeout=timeout_seconds())
        else:
            doc = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=timeout_seconds())
    except Exception as exc:  # the API's refusals and the connection's failures, classified
        raise api_failure(exc, host, f"listing MOUSs in {where}") from None
    return doc.get("items", [])


def cmd_report(args: argparse.Namespace) -> int:
    """The KPI per month (HTML and PNG plots) from the cluster's MOUSs or the history store's deliveries."""
    from datetime import UTC, datetime
    from pathlib import Path

    from mousflow import report

    if args.history:
        from mousflow.pipeline.history import History
        from mousflow.storage.location import Location

        facts = report.facts_from_deliveries(History(Location.of(args.history)).deliveries())
        source = f"history store {args.history} (delivered MOUSs only)"
    else:
        facts = report.facts_from_resources(_cluster_mouses(None if args.all_namespaces else args.namespace))
        source = "all namespaces" if args.all_namespaces else f"namespace {args.namespace}"
    page = report.write_report(facts, Path(args.out), datetime.now(UTC), source)
    print(f"KPI report of {len(facts)} MOUSs ({source}): {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mousflow.simulate import PRESETS

    parser = _Parser(prog="mousflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mousflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated MOUS (MSv4 Zarr, mous.yaml, truth.json)")
    p.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--out", required=True, help="local directory or s3://bucket/prefix")
    p.add_argument("--seed", type=non_negative_int, default=1)
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("import-ms", help="convert CASA Measurement Sets (one per execution block) to MSv4 and write "
                                         "a MOUS manifest")
    p.add_argument("ms", nargs="+", metavar="MS", help="Measurement Set directories (MSv2), one per execution block")
    p.add_argument("--out", required=True, help="local directory or s3://bucket/prefix for the MOUS")
    p.add_argument("--name", help="the MOUS object's name (default: from its UID)")
    p.add_argument("--uid", help="the MOUS UID, uid://A001/X.../X... (default: made from the execution blocks)")
    p.add_argument("--project-code", help="ALMA project code (default: the MS's, if it is one)")
    p.add_argument("--band", type=band_number, help="ALMA band (default: from the target's frequencies)")
    p.add_argument("--sensitivity", type=positive_float, metavar="JY", help="requested rms, Jy/beam")
    p.add_argument("--sensitivity-bandwidth", type=positive_float, metavar="HZ",
                   help="bandwidth the sensitivity is for (default: the target windows' total)")
    p.add_argument("--resolution", type=positive_float, nargs=2, metavar=("MIN", "MAX"),
                   help="accepted beam size range, arcsec")
    p.add_argument("--calibrator-flux", nargs="+", action="append", metavar="VALUE",
                   help="FIELD FLUX_JY FREQUENCY_HZ [SPECTRAL_INDEX]: a calibrator's flux density (needed when "
                        "an execution block has no flux calibrator); repeat for several")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_import_ms)

    p = sub.add_parser("validate", help="check a MOUS manifest (schema, telescope) and its data (what `run` checks, "
                                        "and every execution block against its recorded checksums)")
    p.add_argument("manifest", help="the manifest file (YAML)")
    p.add_argument("--schema-only", action="store_true", help="check the manifest alone, not its data")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("crd", help="print the MOUS and MOUSCampaign CustomResourceDefinitions (kubectl apply -f -)")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("stage", help="run one pipeline stage (the entry point of stage pods)")
    p.add_argument("stage", choices=["calibration", "imaging", "packaging"])
    p.add_argument("--manifest", required=True, help="URI of the MOUS manifest (the flow writes <output>/mous.yaml)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("run", help="process one MOUS locally (Prefect flow, stages as local processes)")
    p.add_argument("--manifest", required=True, help="the MOUS manifest (YAML)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads per stage")
    p.add_argument("--verbose", action="store_true", help="also show Prefect's log records (with tracebacks)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("operator", help="run the kopf operator for MOUS resources (settings from MOUSFLOW_* env)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--liveness", metavar="URL", help="serve kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser("review", help="record a reviewer's QA2 decision on a MOUS in Reviewing")
    p.add_argument("name", type=kubernetes_name)
    p.add_argument("decision", choices=["pass", "semipass", "fail"])
    p.add_argument("-n", "--namespace", type=kubernetes_name, default="default")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("retry", help="run a Failed MOUS again, resuming from its last completed stage")
    p.add_argument("name", type=kubernetes_name)
    p.add_argument("--token", default=None, help="a new word for each request (default: the current time)")
    p.add_argument("-n", "--namespace", type=kubernetes_name, default="default")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("report", help="the processing KPI per month (HTML with PNG plots) from the cluster's "
                                      "MOUSs or the history store")
    p.add_argument("--out", required=True, help="directory for index.html and the plots")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("--history", metavar="URI", help="read the history store's delivery records (a path or s3:// "
                   "prefix, as MOUSFLOW_HISTORY) instead of the cluster")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="simulate a MOUS and process it locally, end to end")
    p.add_argument("--workdir", default=None, help="where to work (default: a new temporary directory)")
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=non_negative_int, default=1)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mousflow.errors import describe_error, exit_code_of
    from mousflow.storage.location import classify_failure

    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mousflow: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"mousflow: error: Usage: {exc}", file=sys.stderr)
        return exit_code_of("Usage")
    except Exception as exc:  # every failure ends as one classified line, never a traceback
        failure = classify_failure(exc)
        print(f"mousflow: error: {describe_error(failure)}", file=sys.stderr)
        return exit_code_of(failure.reason)


if __name__ == "__main__":
    sys.exit(main())
