"""The `mousflow` command line: simulate MOUSs, run the pipeline locally, inspect manifests."""

from __future__ import annotations

import argparse
import sys
import time

from mousflow import __version__


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
            raise ValueError("--calibrator-flux takes FIELD FLUX_JY FREQUENCY_HZ [SPECTRAL_INDEX]")
        try:
            fluxes.append(CalibratorFlux(field=values[0], flux_jy=float(values[1]), frequency_hz=float(values[2]),
                                         spectral_index=float(values[3]) if len(values) == 4 else 0.0))
        except Exception as exc:  # pydantic's range checks, float() of a non-number
            raise ValueError(f"--calibrator-flux {' '.join(values)}: {str(exc).splitlines()[0]}") from exc
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
    from mousflow.model import check_spec_semantics, load_manifest

    resource = load_manifest(open(args.manifest).read())
    problems = check_spec_semantics(resource.spec)
    for problem in problems:
        print(f"{args.manifest}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.manifest}: valid MOUS {resource.spec.uid} ({len(resource.spec.execution_blocks)} execution blocks)")
    return 0


def cmd_crd(_args: argparse.Namespace) -> int:
    from mousflow_operator.crd import crd_text

    sys.stdout.write(crd_text())
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
    from mousflow.stages.runner import exit_code, run_stage

    _exit_on_sigterm()
    outcome = run_stage(args.stage, args.manifest, threads=args.threads)
    line = f"stage {outcome.stage}: {outcome.state}"
    if outcome.reason:
        line += f" ({outcome.reason}: {outcome.message})"
    print(line, file=sys.stderr if outcome.state == "Failed" else sys.stdout, flush=True)
    return exit_code(outcome)


def cmd_run(args: argparse.Namespace) -> int:
    """Process one MOUS locally: its stages as local processes, orchestrated by a Prefect flow."""
    import contextlib
    import os

    from mousflow.pipeline import process_mous
    from mousflow.pipeline.local_server import local_prefect_server

    text = open(args.manifest).read()
    server = contextlib.nullcontext(os.environ.get("PREFECT_API_URL")) if os.environ.get("PREFECT_API_URL") \
        else local_prefect_server()
    with server as url:
        _progress(f"Prefect API: {url}")
        result = process_mous(text, threads=args.threads)
    return report_result(result)


def report_result(result) -> int:
    for outcome in result.outcomes:
        m = outcome.metrics
        print(f"  {outcome.stage:<12} {outcome.state:<10} {m.get('wall_seconds', 0):7.1f} s  "
              f"peak {m.get('peak_memory_bytes', 0) / 2**20:7.0f} MiB")
    if not result.succeeded:
        f = result.failed
        print(f"mousflow: error: stage {f.stage} failed: {f.reason}: {f.message}", file=sys.stderr)
        return 1
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


def _custom_objects_api():
    """The Kubernetes API of custom resources, from the pod's service account or KUBECONFIG (a one-line error
    without either)."""
    from kubernetes import client, config

    from mousflow.errors import InvalidInput

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except config.ConfigException as exc:
            raise InvalidInput(f"no Kubernetes cluster configured (set KUBECONFIG): {exc}") from None
    return client.CustomObjectsApi()


def _annotate_mous(namespace: str, name: str, annotations: dict[str, str], expect_phases: tuple[str, ...]) -> str:
    """Set annotations on a MOUS (what `kubectl annotate` does); returns its phase. A missing MOUS or one in a
    phase where the annotation means nothing is a one-line error, and nothing is changed."""
    from kubernetes.client.rest import ApiException

    from mousflow.errors import InvalidInput
    from mousflow.model import GROUP, PLURAL, VERSION

    api = _custom_objects_api()
    try:
        mous = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise InvalidInput(f"mous {namespace}/{name} not found") from None
        raise
    phase = (mous.get("status") or {}).get("phase", "FullyObserved")
    if phase not in expect_phases:
        raise InvalidInput(f"mous {namespace}/{name} is {phase}; this applies to {' or '.join(expect_phases)}")
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                       {"metadata": {"annotations": annotations}})
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
    """Every MOUS of one namespace (None: all), read once; an unreachable or refusing cluster is one line."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from mousflow.errors import InvalidInput
    from mousflow.model import GROUP, PLURAL, VERSION

    api = _custom_objects_api()
    where = f"namespace {namespace}" if namespace else "the cluster"
    try:
        if namespace:
            doc = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _request_timeout=20)
        else:
            doc = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=20)
    except ApiException as exc:
        raise InvalidInput(f"cannot list MOUSs in {where}: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        why = str(getattr(exc, "reason", None) or type(exc).__name__).split(": ")[-1]
        raise InvalidInput(f"cannot reach the Kubernetes API at {api.api_client.configuration.host}: {why}") from None
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

    parser = argparse.ArgumentParser(prog="mousflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mousflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated MOUS (MSv4 Zarr, mous.yaml, truth.json)")
    p.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--out", required=True, help="local directory or s3://bucket/prefix")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("import-ms", help="convert CASA Measurement Sets (one per execution block) to MSv4 and write "
                                         "a MOUS manifest")
    p.add_argument("ms", nargs="+", metavar="MS", help="Measurement Set directories (MSv2), one per execution block")
    p.add_argument("--out", required=True, help="local directory or s3://bucket/prefix for the MOUS")
    p.add_argument("--name", help="the MOUS object's name (default: from its UID)")
    p.add_argument("--uid", help="the MOUS UID, uid://A001/X.../X... (default: made from the execution blocks)")
    p.add_argument("--project-code", help="ALMA project code (default: the MS's, if it is one)")
    p.add_argument("--band", type=int, help="ALMA band (default: from the target's frequencies)")
    p.add_argument("--sensitivity", type=float, metavar="JY", help="requested rms, Jy/beam")
    p.add_argument("--sensitivity-bandwidth", type=float, metavar="HZ",
                   help="bandwidth the sensitivity is for (default: the target windows' total)")
    p.add_argument("--resolution", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="accepted beam size range, arcsec")
    p.add_argument("--calibrator-flux", nargs="+", action="append", metavar="VALUE",
                   help="FIELD FLUX_JY FREQUENCY_HZ [SPECTRAL_INDEX]: a calibrator's flux density (needed when "
                        "an execution block has no flux calibrator); repeat for several")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_import_ms)

    p = sub.add_parser("validate", help="check a MOUS manifest against the schema and the telescope")
    p.add_argument("manifest")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("crd", help="print the MOUS CustomResourceDefinition (kubectl apply -f -)")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("stage", help="run one pipeline stage (the entry point of stage pods)")
    p.add_argument("stage", choices=["calibration", "imaging", "packaging"])
    p.add_argument("--manifest", required=True, help="URI of the MOUS manifest (the flow writes <output>/mous.yaml)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("run", help="process one MOUS locally (Prefect flow, stages as local processes)")
    p.add_argument("--manifest", required=True, help="the MOUS manifest (YAML)")
    p.add_argument("--threads", type=int, default=2, help="threads per stage")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("operator", help="run the kopf operator for MOUS resources (settings from MOUSFLOW_* env)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--liveness", metavar="URL", help="serve kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser("review", help="record a reviewer's QA2 decision on a MOUS in Reviewing")
    p.add_argument("name")
    p.add_argument("decision", choices=["pass", "semipass", "fail"])
    p.add_argument("-n", "--namespace", default="default")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("retry", help="run a Failed MOUS again, resuming from its last completed stage")
    p.add_argument("name")
    p.add_argument("--token", default=None, help="a new word for each request (default: the current time)")
    p.add_argument("-n", "--namespace", default="default")
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
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mousflow.errors import MousflowError, describe_error

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mousflow: interrupted", file=sys.stderr)
        return 130
    except (MousflowError, ValueError, OSError) as exc:
        print(f"mousflow: error: {describe_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
