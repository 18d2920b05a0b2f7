"""Stages as Kubernetes Jobs: the same `mousflow stage` entry point, in a pod sized to the stage's demand.

The flow launches each stage itself (rather than through a Prefect work pool) because it must size every
pod from the MOUS's data, watch for out-of-memory kills and relaunch with more memory, and adopt a Job that
is already running after a restart; a work pool's per-run job variables could size the pod but would hide
the pod's fate behind the worker. Job names are deterministic (MOUS, run, stage, attempt), so launching twice
adopts the first Job instead of starting a second pod; the run (a tag of the operator's flow run: its retry
token and automatic attempt) keeps a retried run from taking the names, and the outcomes, of the failed run's
Jobs, which their TTL keeps for an hour.

Pods run as the restricted Pod Security profile demands: non-root, read-only root filesystem (with an
emptyDir for /tmp), no privilege escalation, all capabilities dropped, RuntimeDefault seccomp. S3
credentials come from a Secret, never from the MOUS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mousflow.errors import EXIT_CODES, first_line
from mousflow.model import API_VERSION, KIND
from mousflow.model.spec import uid_digest
from mousflow.pipeline import reports
from mousflow.pipeline.resources import ResourceRequest, parse_memory
from mousflow.pod_security import restricted_container_security, restricted_pod_security, tmp_mount, tmp_volume
from mousflow.process_env import stage_process_env_vars
from mousflow.stages.context import StageOutcome
from mousflow.stages.memory_watch import memory_location
from mousflow.stages.runner import progress_location, skip_if_complete, status_location
from mousflow.storage.location import Location

LineFn = Callable[[str], None]
LABEL_MOUS = "mousflow.io/mous"
LABEL_STAGE = "mousflow.io/stage"


def retries_location(run_root: Location, stage: str) -> Location:
    """The launcher's record of a stage's attempts that were run again (the operator shows them in status)."""
    return run_root.join("status", f"{stage}.retries.json")


MEMORY_REASONS = ("OOMKilled", "OutOfMemory")
"""Failures that more memory can fix: the kernel killed the stage's container (or a process in it), or the
stage saw its Dask worker die of memory."""
RESIZED = "ResizedInPlace"
"""The record of a stage pod whose memory limit was raised while it ran (the attempt went on)."""
MEMORY_SAMPLE_MAX_AGE_SECONDS = 30.0


def resize_target(working_set: int, limit: int | None, threshold: float, factor: float, cap: int) -> int | None:
    """The memory limit to raise a running stage pod to, or None: when its working set has reached `threshold`
    of its limit, the limit times `factor` (the out-of-memory retry's factor), up to `cap`."""
    if not limit or limit >= cap or working_set < threshold * limit:
        return None
    return min(cap, int(limit * factor))


RUN_TAG_CHARS = 8


def job_name(uid: str, stage: str, attempt: int, run: str = "") -> str:
    """A DNS-1123 name, stable for (MOUS, run, stage, attempt), short enough for the job-name label of its pods
    (63 characters at most: "mousflow-" + 10 + run tag 8 + "calibration" + attempt stays under 50)."""
    digest = uid_digest(uid)
    return f"mousflow-{digest}-{run[:RUN_TAG_CHARS]}-{stage}-{attempt}" if run else \
        f"mousflow-{digest}-{stage}-{attempt}"


@dataclass(frozen=True)
class JobSettings:
    namespace: str
    image: str
    s3_secret: str
    """Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""
    s3_endpoint: str | None = None
    s3_region: str | None = None
    """AWS_DEFAULT_REGION of stage pods (and of their Dask workers): S3 clients need it to sign for AWS."""
    service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"
    ttl_seconds_after_finished: int = 3600
    owner: tuple[str, str] | None = None
    """(name, uid) of the MOUS the Jobs belong to: set as their owner at creation, so the garbage collector
    removes them with the MOUS, and removes at once a Job created after the MOUS was deleted."""
    dask_service_account: str | None = None
    """Set: the imaging stage scales its cube out over Dask worker pods (dask-kubernetes), running as this
    service account (the chart makes it, with a Role for exactly that: templates/dask-imaging.yaml). None: its chunks
    run on a local Dask cluster inside the stage pod."""
    dask_min_workers: int = 1
    dask_max_workers: int = 4
    dask_worker_cpu: str = "1"
    dask_unschedulable_seconds: float = 120.0
    """How long the imaging pod waits on worker pods that no node can take before it images the chunks itself
    (stages.dask_kubernetes_cluster.wait_for_workers)."""
    test_env: dict[str, str] = field(default_factory=dict)
    """TEST ONLY: stages.runner.TEST_VARIABLES set in the operator's environment, passed to stage pods as they are
    (a stage that fails once, outgrows its limit, loses a child for memory)."""


def s3_env(settings: JobSettings) -> list[dict]:
    """A pod's S3 access: the keys from the namespace's Secret (never their values), the endpoint and region as
    pods reach them."""
    env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": settings.s3_secret, "key": key}}}
           for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    if settings.s3_endpoint:
        env.append({"name": "MOUSFLOW_S3_ENDPOINT", "value": settings.s3_endpoint})
    if settings.s3_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": settings.s3_region})
    return env


def _dask_env(settings: JobSettings, worker: ResourceRequest) -> list[dict]:
    """What the imaging pod needs to start its own Dask cluster (stages.dask_kubernetes_cluster)."""
    def from_pod(path: str) -> dict:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = [
        {"name": "MOUSFLOW_DASK", "value": "kubernetes"},
        {"name": "MOUSFLOW_DASK_IMAGE", "value": settings.image},
        {"name": "MOUSFLOW_IMAGE_PULL_POLICY", "value": settings.image_pull_policy},
        {"name": "MOUSFLOW_DASK_NAMESPACE", **from_pod("metadata.namespace")},
        {"name": "MOUSFLOW_POD_NAME", **from_pod("metadata.name")},
        {"name": "MOUSFLOW_POD_UID", **from_pod("metadata.uid")},
        {"name": "MOUSFLOW_S3_SECRET", "value": settings.s3_secret},
        {"name": "MOUSFLOW_DASK_MIN_WORKERS", "value": str(settings.dask_min_workers)},
        {"name": "MOUSFLOW_DASK_MAX_WORKERS", "value": str(settings.dask_max_workers)},
        {"name": "MOUSFLOW_DASK_WORKER_CPU", "value": settings.dask_worker_cpu},
        {"name": "MOUSFLOW_DASK_UNSCHEDULABLE_SECONDS", "value": f"{settings.dask_unschedulable_seconds:g}"},
        {"name": "MOUSFLOW_DASK_WORKER_MEMORY", "value": str(worker.memory_bytes)},
        {"name": "MOUSFLOW_DASK_WORKER_MEMORY_LIMIT", "value": str(worker.memory_limit_bytes)},
    ]
    return env


def build_stage_job_spec(settings: JobSettings, *, uid: str, stage: str, attempt: int, manifest_uri: str,
                         resources: ResourceRequest, threads: int,
                         worker_resources: ResourceRequest | None = None, run: str = "") -> dict:
    """The Job manifest of one stage attempt of run `run` (a pure function of its arguments).

    With settings.dask_service_account and worker_resources, the imaging stage's pod starts Dask workers
    sized by worker_resources (one channel chunk each) and may use the Kubernetes API for that alone."""
    name = job_name(uid, stage, attempt, run)
    labels = {"app.kubernetes.io/name": "mousflow", "app.kubernetes.io/component": "stage",
              LABEL_MOUS: uid_digest(uid), LABEL_STAGE: stage}
    env = [
        *s3_env(settings),
        {"name": "HOME", "value": "/tmp"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        {"name": "OMP_NUM_THREADS", "value": str(threads)},
        *stage_process_env_vars(),
    ]
    env += [{"name": name, "value": value} for name, value in sorted(settings.test_env.items())]
    scale_out = stage == "imaging" and settings.dask_service_account is not None and worker_resources is not None
    if scale_out:
        env += _dask_env(settings, worker_resources)
    elif stage == "imaging":
        # Chunks on a local Dask cluster inside the pod: as many worker processes as the pod has threads
        # (the node's core count, which the pod would see, is not what it was given).
        env.append({"name": "MOUSFLOW_DASK_MAX_WORKERS", "value": str(max(1, threads))})
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(),
        "containers": [{
            "name": "stage",
            "image": settings.image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": ["mousflow", "stage", stage, "--manifest", manifest_uri, "--threads", str(threads)],
            "env": env,
            "resources": resources.kubernetes(),
            "securityContext": restricted_container_security(),
            "volumeMounts": [tmp_mount()],
            # The stage's last log lines become the termination message when it fails: its one-line error
            # ("mousflow: error: <reason>: ...") reaches the launcher even when the stage could not write its
            # report to storage (credentials refused there, say).
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": [tmp_volume()],
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    metadata = {"name": name, "namespace": settings.namespace, "labels": labels,
                "annotations": {"mousflow.io/uid": uid, "mousflow.io/run": run, "mousflow.io/attempt": str(attempt)}}
    if settings.owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": KIND, "name": settings.owner[0],
                                        "uid": settings.owner[1], "controller": False,
                                        "blockOwnerDeletion": False}]
    if scale_out:
        pod_spec["serviceAccountName"] = settings.dask_service_account
        pod_spec["automountServiceAccountToken"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            # The flow decides about retries (with more memory after an OOM kill), not the Job controller.
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


POD_START_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "ErrImagePull", "ImagePullBackOff",
                    "InvalidImageName")
"""Waiting reasons of a stage container that will not start without a person: a missing Secret or key, an image
that cannot be pulled. The kubelet keeps trying, so the launcher gives it pod_start_error_seconds first."""
CANNOT_START = "PodCannotStart"


def pod_start_problem(pods: list[dict]) -> str | None:
    """Why the stage's pod cannot start (its container's waiting reason and the kubelet's message, which names
    the Secret or the image), from the Job's pods in API form; None while nothing says so."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("container_statuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in POD_START_ERRORS:
                return f"{waiting['reason']}: {waiting.get('message') or 'no message'}"
    return None


CLASSIFIED_EXIT_CODES = {code: reason for reason, code in EXIT_CODES.items() if code > 2}
"""Exit code -> the reason a stage classified its failure as (mousflow.errors; 1, unclassified, and 2, usage,
say nothing a report would not)."""


def _error_line(termination_message: str) -> str:
    """The message of the stage's `mousflow: error: <reason>: <message>` line in its termination message."""
    for line in reversed(termination_message.splitlines()):
        if line.startswith("mousflow: error: "):
            return line.removeprefix("mousflow: error: ").partition(": ")[2].strip()
    return ""


def classify_pod_termination(pod_status: dict | None) -> tuple[str, str]:
    """(reason, message) of a finished stage pod from its status (None: the pod is gone).

    An out-of-memory kill is recognised by the container's termination reason (its current or last state),
    whatever its exit code:
    Kubernetes reports reason OOMKilled with exit code 137 when the main process was killed, and with exit
    code 0 when the kernel killed a child and the main process still exited normally. A pod that was
    deleted, evicted or killed by a signal (exit 143 = SIGTERM, 137 = SIGKILL) was interrupted from outside:
    running the stage again resumes it, at the same size.
    """
    if pod_status is None:
        return "Interrupted", "the stage pod was deleted before it reported an outcome"
    if pod_status.get("reason") == "Evicted":
        return "Interrupted", f"stage pod evicted: {pod_status.get('message', '')}".rstrip(": ")
    for cs in pod_status.get("containerStatuses") or []:
        terminations = [t for t in ((cs.get("state") or {}).get("terminated"),
                                    (cs.get("lastState") or {}).get("terminated")) if t]
        for term in terminations:
            if term.get("reason") == "OOMKilled" and term.get("exitCode") == 0:
                return "OOMKilled", ("a process in the stage container (a Dask worker, say) was killed for "
                                     "exceeding the container's memory limit (the stage exited with code 0)")
            if term.get("reason") == "OOMKilled":
                return "OOMKilled", ("stage container killed for exceeding its memory limit "
                                     f"(exit code {term.get('exitCode')})")
        if not terminations:
            continue
        reason, code = terminations[0].get("reason", ""), terminations[0].get("exitCode")
        if code in (137, 143):
            signame = "SIGKILL" if code == 137 else "SIGTERM"
            return "Interrupted", f"stage container killed by {signame} (exit code {code}) before it finished"
        if code in CLASSIFIED_EXIT_CODES:  # the stage's own classification, from its exit code and error line
            said = _error_line(terminations[0].get("message") or "")
            return CLASSIFIED_EXIT_CODES[code], said or f"the stage exited with code {code}"
        if code not in (0, None):
            return "Error", f"stage container exited with code {code} ({reason})"
        return "", ""
    return "", ""


def classify_finished_pod(pod: dict | None) -> tuple[str, str]:
    """(reason, message) of a finished Job's pod in API form (None: no pod left). A pod with a deletion
    timestamp was deleted from outside (by a person, a drain or the node going away): an interruption."""
    if pod is not None and (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Interrupted", "the stage pod was deleted before it finished"
    return classify_pod_termination(pod.get("status", {}) if pod is not None else None)


def classify_job_pod(job_succeeded: bool, pod: dict | None) -> tuple[str, str]:
    """(reason, message) of a finished Job's last pod in API form (None: no pod left). A failed Job's pod says
    why it failed (classify_finished_pod). A succeeded Job's pod says only whether the kernel killed a process
    in it for memory (exit code 0 all the same); its being gone or deleted after the Job succeeded is no news."""
    if not job_succeeded:
        return classify_finished_pod(pod)
    reason, message = classify_pod_termination((pod or {}).get("status") or {})
    return (reason, message) if reason == "OOMKilled" else ("", "")


def adoptable(existing: dict, spec: dict) -> bool:
    """Whether the Job found under `spec`'s name is this very attempt's (created before an operator restart),
    to be followed. A Job of another run or attempt (an earlier run's, kept by its TTL) never is: its outcome
    is not this attempt's, and following it would report that old outcome again."""
    want = spec["metadata"]["annotations"]
    have = (existing.get("metadata") or {}).get("annotations") or {}
    return all(have.get(key, "") == want[key] for key in ("mousflow.io/uid", "mousflow.io/run", "mousflow.io/attempt"))


def attempt_outcome(stage: str, report: dict | None, pod_reason: str, pod_message: str,
                    metrics: dict) -> StageOutcome:
    """The outcome of one stage attempt, from the stage's report (its status in storage, None if it wrote
    none) and its pod's fate (classify_finished_pod), with the launcher's `metrics` added.

    A stage that reported Succeeded or Skipped finished and checkpointed its work, even if the kernel killed
    one of its processes on the way (a Dask worker, replaced by its nanny). A failure in a pod where the kernel
    killed a process for memory is an out-of-memory failure, whatever the stage made of the work it lost (a
    worker gone in the middle of a chunk can surface as any error): more memory is the cure, not a person."""
    reported = (report or {}).get("metrics", {})
    if report is not None and pod_reason not in ("OOMKilled", "Interrupted") and reported.get("oom_kills"):
        # the kernel's own count, which the stage read from its cgroup: the runtime may not have said OOMKilled
        # for a child killed while the stage process survived
        pod_reason, pod_message = "OOMKilled", (f"the kernel killed {reported['oom_kills']} process(es) in the "
                                                "stage container for exceeding its memory limit")
    if report is not None and pod_reason != "Interrupted" and report.get("state") in ("Succeeded", "Skipped"):
        return StageOutcome(report["stage"], report["state"], report.get("reason", ""), report.get("message", ""),
                            {**reported, **metrics})
    if report is None or pod_reason in ("OOMKilled", "Interrupted"):
        said = f"; the stage reported {report.get('reason')}: {report.get('message', '')}" if report else ""
        return StageOutcome(stage, "Failed", pod_reason or "Error",
                            (pod_message or "the stage pod ended without reporting an outcome") + said,
                            {**reported, **metrics})
    return StageOutcome(report["stage"], report["state"], report.get("reason", ""), report.get("message", ""),
                        {**reported, **metrics})


class PodCannotStart(Exception):
    """The stage's pod has been stuck for pod_start_error_seconds on a problem only a person can fix."""


@dataclass
class _StartWatch:
    """What the Job watch has learnt of its pod's start: running yet; since when stuck on a problem."""

    started: bool = False
    problem_since: float | None = None


def api_unreachable(exc: BaseException) -> bool:
    """Whether a failed API request failed for the API server being away (connection refused or reset, a
    timeout, 429/5xx while it starts) rather than for the request: worth waiting out, not reporting."""
    import urllib3
    from kubernetes.client.rest import ApiException

    if isinstance(exc, ApiException):
        return exc.status in (429, 500, 502, 503, 504)
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError)


class KubernetesJobLauncher:
    """Runs each stage as a Kubernetes Job and reports its outcome (from the stage's status in storage and the
    fate of its pod).

    `run` tags the Job names of one run of the flow (see job_name); `batch_api` and `core_api` are the
    Kubernetes clients (BatchV1Api, CoreV1Api), made from the in-cluster or local configuration when not given.
    """

    def __init__(self, settings: JobSettings, resources: Callable[[str], ResourceRequest], threads: int = 1,
                 poll_seconds: float = 2.0, timeout_seconds: float = 3600.0, attempt: int = 1,
                 oom_memory_factor: float = 1.5, oom_max_retries: int = 3, memory_cap_bytes: int = 64 * 2**30,
                 interruption_retries: int = 2, run: str = "", batch_api=None, core_api=None, custom_api=None,
                 resize_in_place: bool = True, resize_threshold: float = 0.8,
                 pod_start_error_seconds: float = 120.0, api_outage_seconds: float = 300.0):
        if batch_api is None or core_api is None:
            from kubernetes import client

            from mousflow.kube_config import load_kube_config

            load_kube_config()
            batch_api, core_api = client.BatchV1Api(), client.CoreV1Api()
        self.batch = batch_api
        self.core = core_api
        self._custom = custom_api
        self.settings = settings
        self.resources = resources
        self.threads = threads
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.attempt = attempt
        self.run = run
        self.oom_memory_factor = oom_memory_factor
        self.oom_max_retries = oom_max_retries
        self.memory_cap_bytes = memory_cap_bytes
        self.interruption_retries = interruption_retries
        self.resize_in_place = resize_in_place
        self.resize_threshold = resize_threshold
        self.pod_start_error_seconds = pod_start_error_seconds
        self.api_outage_seconds = api_outage_seconds

    def launch(self, stage: str, manifest_uri: str, run_root: Location, on_line: LineFn) -> StageOutcome:
        """Run the stage; after running out of memory run it again with more memory (up to the cap and the
        retry limit), after an interruption (pod deleted, evicted, killed by a signal) run it again as it was.
        The stage resumes from its checkpoints, so a retry repeats only unfinished work. Every retry is a new
        Job (the next attempt number), so a Job name never hides two different pods."""
        from mousflow.model import load_manifest

        uid = load_manifest(Location.of(manifest_uri).read_text()).spec.uid
        request = self.resources(stage)
        worker = self.resources("imaging-worker") if stage == "imaging" and self.settings.dask_service_account \
            else None
        request, worker = self._above_earlier_kills(run_root, stage, request, worker, on_line)
        oom_kills: list[int] = []
        interruptions: list[str] = []
        attempt = self.attempt
        while True:
            outcome, attempt = self._launch_once(uid, stage, manifest_uri, run_root, on_line, request, worker,
                                                 attempt)
            attempt += 1
            raised = outcome.metrics.get("memory_limit_bytes", 0)
            if raised > request.memory_limit_bytes:  # grown in place: a retry starts above what it reached
                request = request.scaled(raised / request.memory_limit_bytes, self.memory_cap_bytes)
            # What ran out: a worker pod's memory when the stage saw its worker die, else the stage pod's (which
            # holds the local Dask workers when there are no worker pods).
            grow_worker = outcome.reason == "OutOfMemory" and worker is not None
            exceeded = worker if grow_worker else request
            if outcome.reason in (*MEMORY_REASONS, "Interrupted"):
                self._record_retry(run_root, stage, outcome, exceeded, uid)
                # A pod lost between its stage's last checkpoint write and its exit (deleted, evicted, killed)
                # finished the work: a new pod would only find that out, and would start after the checkpoint.
                if (done := skip_if_complete(stage, manifest_uri)) is not None:
                    on_line(f"stage {stage}: its pod ended {outcome.reason} after the stage's checkpoint was "
                            "written: complete, not started again")
                    outcome = done
                    break
            if outcome.reason in MEMORY_REASONS and len(oom_kills) < self.oom_max_retries and \
                    exceeded.memory_limit_bytes < self.memory_cap_bytes:
                oom_kills.append(exceeded.memory_limit_bytes)
                grown = exceeded.scaled(self.oom_memory_factor, self.memory_cap_bytes)
                worker, request = (grown, request) if grow_worker else (worker, grown)
                on_line(f"stage {stage}: {outcome.reason}; retrying with {'worker ' if grow_worker else ''}"
                        f"memory limit {grown.memory_limit_bytes // 2**20}Mi")
                continue
            if outcome.reason == "Interrupted" and len(interruptions) < self.interruption_retries:
                interruptions.append(outcome.message)
                on_line(f"stage {stage} was interrupted ({outcome.message}); resuming it in a new pod")
                continue
            break
        outcome.metrics["oom_killed_at_limits_bytes"] = oom_kills
        outcome.metrics["interruptions"] = interruptions
        self._report_failure(run_root, outcome)
        return outcome

    @property
    def custom(self):
        """The custom-resource client (DaskClusters), on the core client's configuration."""
        if self._custom is None:
            from kubernetes import client

            self._custom = client.CustomObjectsApi(self.core.api_client)
        return self._custom

    def _stage_jobs(self, stage: str, manifest_uri: str) -> tuple[str, list[dict]]:
        """(the name prefix of this run's Jobs for the stage, every Job of the MOUS for the stage)."""
        from mousflow.model import load_manifest

        uid = load_manifest(Location.of(manifest_uri).read_text()).spec.uid
        prefix = job_name(uid, stage, 0, self.run).removesuffix("0")
        jobs = self.batch.list_namespaced_job(
            self.settings.namespace, label_selector=f"{LABEL_MOUS}={uid_digest(uid)},"
                                                    f"{LABEL_STAGE}={stage}").to_dict()["items"]
        return prefix, jobs

    def job_of_this_run(self, stage: str, manifest_uri: str) -> str | None:
        """The name of a Job of this run (its run tag) for the stage, if there is one (the newest attempt's);
        None without a run tag."""
        if not self.run:
            return None
        prefix, jobs = self._stage_jobs(stage, manifest_uri)
        ours = sorted((j["metadata"]["name"] for j in jobs if j["metadata"]["name"].startswith(prefix)),
                      key=lambda name: int(name.rsplit("-", 1)[1]))
        return ours[-1] if ours else None

    def running_job_of_another_run(self, stage: str, manifest_uri: str) -> str | None:
        """The name of a Job of an earlier run of the MOUS for the stage that is still running (its flow run
        ended while the pod went on: the operator's thread lost to an outage, a restart), if any; None without
        a run tag."""
        if not self.run:
            return None
        prefix, jobs = self._stage_jobs(stage, manifest_uri)

        def running(job: dict) -> bool:
            # Not finished is running: a Job just created has no status yet (no pod counted active), for longer
            # while the Job controller catches up after an API server restart; the chaos suite saw a second
            # run start its own imaging Job beside such a one, and both succeeded.
            st = job.get("status") or {}
            ended = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                        for c in st.get("conditions") or [])
            return not (ended or st.get("succeeded") or st.get("failed"))

        return max((j["metadata"]["name"] for j in jobs
                    if not j["metadata"]["name"].startswith(prefix) and running(j)), default=None)

    def release_earlier_runs(self, stage: str, manifest_uri: str, on_line: LineFn) -> None:
        """Delete the DaskClusters that ended imaging pods of earlier runs of the MOUS left behind. Such a pod's
        run normally releases its cluster when the pod ends (_release_dask_cluster_of), but a run that ended
        first (its flow run failed, the operator restarted) never does, and the cluster, owned by the pod the
        failed Job keeps for its TTL, would hold its scheduler and workers that long. Only ended pods: a
        running one belongs to a Job running_job_of_another_run has waited for. Best effort: logged, never
        fatal."""
        if stage != "imaging" or not self.settings.dask_service_account or not self.run:
            return
        ns = self.settings.namespace
        try:
            prefix, jobs = self._stage_jobs(stage, manifest_uri)
            for job in jobs:
                if job["metadata"]["name"].startswith(prefix):
                    continue
                pods = self.core.list_namespaced_pod(
                    ns, label_selector=f"job-name={job['metadata']['name']}").to_dict()["items"]
                for pod in pods:
                    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        self._release_dask_cluster(ns, pod["metadata"]["name"], on_line)
        except Exception as exc:  # the stage matters more than this tidying; the next run tries again
            on_line(f"could not look for Dask clusters left by earlier runs: {type(exc).__name__}: {exc}")

    def follow(self, stage: str, job: str, run_root: Location, on_line: LineFn) -> StageOutcome:
        """The outcome of an existing Job of this run, waited for without creating anything."""
        job_succeeded, pod = self._wait(job, self.settings.namespace, on_line)
        pod_reason, pod_message = classify_job_pod(job_succeeded, pod)
        self._release_dask_cluster_of(stage, pod, on_line)
        status = status_location(run_root, stage)
        return attempt_outcome(stage, status.read_json() if status.exists() else None, pod_reason, pod_message,
                               {"job": job})

    def _above_earlier_kills(self, run_root: Location, stage: str, request: ResourceRequest,
                             worker: ResourceRequest | None, on_line: LineFn
                             ) -> tuple[ResourceRequest, ResourceRequest | None]:
        """The sizes to start at: a stage that ran out of memory before in this output location (its retries
        record, which outlives the run) starts at the factor above the largest limit it was killed at, not at
        the model's size again, so a retried run (`mousflow retry`, a campaign's RetryWithMoreMemory) does not
        repeat the kills it already had. OutOfMemory with Dask worker pods grows the workers, as in launch."""
        loc = retries_location(run_root, stage)
        if not loc.exists():
            return request, worker

        def grown(size: ResourceRequest, reasons: tuple[str, ...], what: str) -> ResourceRequest:
            killed = [parse_memory(r["memoryLimit"]) for r in loc.read_json()
                      if r.get("reason") in reasons and r.get("memoryLimit")]
            if not killed or max(killed) < size.memory_limit_bytes:
                return size
            factor = max(killed) * self.oom_memory_factor / size.memory_limit_bytes
            bigger = size.scaled(factor, self.memory_cap_bytes)
            on_line(f"stage {stage}: ran out of memory before at {max(killed) // 2**20}Mi; starting {what}at "
                    f"memory limit {bigger.memory_limit_bytes // 2**20}Mi")
            return bigger

        if worker is not None:
            return grown(request, ("OOMKilled",), ""), grown(worker, ("OutOfMemory",), "worker ")
        return grown(request, MEMORY_REASONS, ""), worker

    @staticmethod
    def _report_failure(run_root: Location, outcome: StageOutcome) -> None:
        """Put a failure the launcher classified from the pod (out of memory, interrupted, no report) where the
        operator reads the stage's outcome, in place of what the stage said (or did not say) about it.

        Only the final outcome: an attempt that failed and was run again is recorded in retries_location, and
        a status written per attempt could pass for a later attempt's when a restarted flow follows its Jobs."""
        status = status_location(run_root, outcome.stage)
        report = status.read_json() if status.exists() else None
        if outcome.state == "Failed" and (report is None or report.get("reason") != outcome.reason):
            status.write_json(outcome.to_json())

    @classmethod
    def _record_retry(cls, run_root: Location, stage: str, outcome: StageOutcome, request: ResourceRequest,
                      uid: str = "") -> None:
        cls._record(run_root, stage, {"job": outcome.metrics.get("job", ""), "reason": outcome.reason,
                                      "message": outcome.message[:1024],
                                      "memoryLimit": f"{request.memory_limit_bytes // 2**20}Mi"}, uid)

    @staticmethod
    def _record(run_root: Location, stage: str, entry: dict, uid: str = "") -> None:
        """Append to the stage's record of memory events and retries (status.stages.<stage>.retries)."""
        loc = retries_location(run_root, stage)
        record = loc.read_json() if loc.exists() else []
        same = ("job", "reason", "memoryLimit")
        if any(all(r.get(k) == entry.get(k) for k in same) for r in record):  # followed again after a restart
            return
        record.append(entry)
        loc.write_json(record)
        if uid:  # to the process running the flow (the operator): see pipeline.reports
            reports.publish(uid, {"kind": "retries", "stage": stage, "retries": record})

    def _grow_in_place(self, run_root: Location, stage: str, job: str, ns: str, uid: str, on_line: LineFn,
                       state: dict) -> None:
        """Called while the stage's Job runs: when the stage pod's working set (the stage publishes it,
        stages.memory_watch) nears its limit, raise the limit through the pod's `resize` subresource (Kubernetes
        1.33+, in-place pod resize; the memory request, and so the pod's scheduling, is left as it was). The
        out-of-memory retry stays the fallback: a runtime that refuses is logged once and not asked again."""
        from kubernetes.client.rest import ApiException

        if not self.resize_in_place or state.get("refused"):
            return
        loc = memory_location(run_root, stage)
        try:
            sample = loc.read_json() if loc.exists() else None
        except Exception:  # a sample being written, storage away for a moment: the next poll reads it
            return
        if not sample or time.time() - float(sample.get("time", 0)) > MEMORY_SAMPLE_MAX_AGE_SECONDS:
            return
        working_set, limit = int(sample["workingSetBytes"]), sample.get("limitBytes")
        if state.get("asked", 0) > (limit or 0):  # the last raise is not in the cgroup yet
            return
        target = resize_target(working_set, limit, self.resize_threshold, self.oom_memory_factor,
                               self.memory_cap_bytes)
        if target is None:
            return
        pods = self.core.list_namespaced_pod(ns, label_selector=f"job-name={job}").to_dict()["items"]
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            return
        pod = running[-1]["metadata"]["name"]
        change = [{"op": "replace", "path": "/spec/containers/0/resources/limits/memory",
                   "value": f"{target // 2**20}Mi"}]
        try:
            self.core.patch_namespaced_pod_resize(pod, ns, change)
        except ApiException as exc:
            state["refused"] = f"{exc.status} {exc.reason}: {(exc.body or '')[:300]}"
            on_line(f"stage {stage}: the cluster refused to resize pod {ns}/{pod} in place ({state['refused']}); "
                    f"an out-of-memory kill will run it again with more memory instead")
            return
        state["asked"] = target
        message = (f"working set {working_set // 2**20}Mi of {limit // 2**20}Mi: memory limit raised in place to "
                   f"{target // 2**20}Mi (pod {pod})")
        on_line(f"stage {stage}: {message}")
        self._record(run_root, stage, {"job": job, "reason": RESIZED, "message": message,
                                       "memoryLimit": f"{limit // 2**20}Mi"}, uid)

    def _launch_once(self, uid: str, stage: str, manifest_uri: str, run_root: Location, on_line: LineFn,
                     request: ResourceRequest, worker: ResourceRequest | None,
                     attempt: int) -> tuple[StageOutcome, int]:
        """Create the attempt's Job (or follow it, if this attempt created it before a restart) and wait for its
        outcome: (outcome, the attempt number its Job has). A name held by a Job of another run or attempt is
        left to it, and the next attempt number taken."""
        from kubernetes.client.rest import ApiException

        ns = self.settings.namespace
        status = status_location(run_root, stage)
        while True:
            spec = build_stage_job_spec(self.settings, uid=uid, stage=stage, attempt=attempt,
                                        manifest_uri=manifest_uri, resources=request, threads=self.threads,
                                        worker_resources=worker, run=self.run)
            name = spec["metadata"]["name"]
            try:
                self.batch.create_namespaced_job(ns, spec)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                if adoptable(self.batch.read_namespaced_job(name, ns).to_dict(), spec):
                    on_line(f"Job {ns}/{name} exists already: following it")
                    break
                on_line(f"Job {ns}/{name} belongs to another run or attempt: leaving it, taking the next name")
                attempt += 1
                continue
            on_line(f"created Job {ns}/{name} (requests {request.kubernetes()['requests']})")
            status.remove()
            progress_location(run_root, stage).remove()
            memory_location(run_root, stage).remove()
            break
        grown: dict = {}
        metrics = {"job": name, "requested_memory_bytes": request.memory_bytes,
                   "memory_limit_bytes": request.memory_limit_bytes}
        try:
            job_succeeded, pod = self._wait(name, ns, on_line, lambda: self._grow_in_place(
                run_root, stage, name, ns, uid, on_line, grown))
        except PodCannotStart as exc:
            # A configuration problem (the S3 Secret missing in this namespace, an image that is not there): no
            # other attempt would start either, so the stage fails with it named, and a person's retry runs it
            # once it is fixed. The Job goes, so its pod does not wait on in the kubelet's back-off.
            from kubernetes.client import V1DeleteOptions
            from kubernetes.client.rest import ApiException

            try:
                self.batch.delete_namespaced_job(name, ns, body=V1DeleteOptions(propagation_policy="Background"))
            except ApiException as exc:  # the failure is the news; a Job left waits for its owner's deletion
                on_line(f"could not delete Job {ns}/{name} ({exc.status} {exc.reason}): its pod may wait on")
            outcome = StageOutcome(stage, "Failed", CANNOT_START, str(exc), metrics)
            self._report_failure(run_root, outcome)
            return outcome, attempt
        metrics["memory_limit_bytes"] = max(request.memory_limit_bytes, grown.get("asked", 0))
        # The pod is examined whether its Job failed or not: the kernel may have killed a process in it (a Dask
        # worker) while the stage went on and exited 0.
        pod_reason, pod_message = classify_job_pod(job_succeeded, pod)
        self._release_dask_cluster_of(stage, pod, on_line)
        report = status.read_json() if status.exists() else None
        return attempt_outcome(stage, report, pod_reason, pod_message, metrics), attempt

    def _release_dask_cluster_of(self, stage: str, pod: dict | None, on_line: LineFn) -> None:
        """_release_dask_cluster for an ended imaging pod, whether this run launched its Job or followed it (an
        earlier run's, or its own after an operator restart: a pod killed then would leave its cluster for the
        Job's TTL, as the chaos suite saw)."""
        if stage == "imaging" and self.settings.dask_service_account and pod is not None:
            self._release_dask_cluster(self.settings.namespace, pod["metadata"]["name"], on_line)

    def _release_dask_cluster(self, ns: str, pod_name: str, on_line: LineFn) -> None:
        """Delete the DaskCluster of a finished imaging pod. The stage deletes it itself on the way out, but a
        pod killed outright (SIGKILL, evicted, OOM-killed) cannot, and its cluster is owned by the pod object,
        which a failed Job keeps for its TTL: the scheduler and worker pods would hold their resources for that
        long (seen in the chaos suite after an eviction)."""
        from kubernetes.client.exceptions import ApiException

        from mousflow.stages.dask_kubernetes_cluster import cluster_name

        try:
            self.custom.delete_namespaced_custom_object("kubernetes.dask.org", "v1", ns, "daskclusters",
                                                        cluster_name(pod_name))
            on_line(f"deleted the Dask cluster of {pod_name}, which it left behind")
        except ApiException as exc:
            if exc.status != 404:  # 404: the stage deleted it itself, as it should
                on_line(f"could not delete the Dask cluster of {pod_name}: {exc.status} {exc.reason}")
        except Exception as exc:  # the API server away just now: the stage's outcome matters more than this
            on_line(f"could not delete the Dask cluster of {pod_name}: {type(exc).__name__}: {exc}")

    def _wait(self, name: str, ns: str, on_line: LineFn,
              while_running: Callable[[], None] | None = None) -> tuple[bool, dict | None]:
        """Wait for the Job to finish: (whether it succeeded, its last pod in API form or None).

        A Job can be marked failed while its pod is still terminating (deleted from outside): the pod is then
        waited for until it is gone (its deletion timestamp is what tells an interruption from a failure, and
        the next attempt must not write beside a pod that is still stopping)."""
        deadline = time.monotonic() + self.timeout_seconds
        watch = _StartWatch()
        outage_since: float | None = None
        while time.monotonic() < deadline:
            try:
                ended = self._poll_job(name, ns, on_line, while_running, watch)
            except Exception as exc:
                # The API server away (restarted, upgraded, a network blip) is not the stage's failure: the Job
                # and its pod go on without it. Given up, the flow run would fail and the next run start its
                # own Jobs beside this one, whose imaging pod's DaskCluster nobody would then release (the
                # chaos suite saw that after restarting the API server).
                if not api_unreachable(exc):
                    raise
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    why = first_line(getattr(exc, "reason", None) or exc)  # urllib3 wraps the socket's error
                    on_line(f"Job {ns}/{name}: the Kubernetes API cannot be reached ({why}); "
                            f"waiting up to {self.api_outage_seconds:.0f} s for it")
                elif now - outage_since >= self.api_outage_seconds:
                    raise
                time.sleep(max(self.poll_seconds, 0.5))
                continue
            if outage_since is not None:
                on_line(f"Job {ns}/{name}: the Kubernetes API answers again after "
                        f"{time.monotonic() - outage_since:.0f} s")
                outage_since = None
            if ended is not None:
                return ended
            time.sleep(self.poll_seconds)
        raise TimeoutError(f"Job {ns}/{name} did not finish within {self.timeout_seconds:.0f} s")

    def _poll_job(self, name: str, ns: str, on_line: LineFn, while_running: Callable[[], None] | None,
                  watch: _StartWatch) -> tuple[bool, dict | None] | None:
        """One look at the Job: (whether it succeeded, its last pod) once it has ended, else None. Only reads
        (and the in-place resize, which guards itself), so a look cut short by an API outage can be repeated."""
        job = self.batch.read_namespaced_job_status(name, ns).to_dict()
        st = job.get("status") or {}
        if not watch.started and st.get("active") and not (st.get("succeeded") or st.get("failed")):
            # until the pod runs: is it stuck on something only a person can fix?
            pods = self.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").to_dict()["items"]
            watch.started = any((p.get("status") or {}).get("phase") == "Running" for p in pods)
            problem = None if watch.started else pod_start_problem(pods)
            if problem is None:
                watch.problem_since = None
            elif watch.problem_since is None:
                watch.problem_since = time.monotonic()
                on_line(f"Job {ns}/{name}: its pod cannot start ({problem}); waiting "
                        f"{self.pod_start_error_seconds:.0f} s for it to be fixed")
            elif time.monotonic() - watch.problem_since >= self.pod_start_error_seconds:
                raise PodCannotStart(f"the stage pod of Job {ns}/{name} could not start for "
                                     f"{self.pod_start_error_seconds:.0f} s: {problem}")
        if st.get("succeeded") or st.get("failed"):
            pods = self.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").to_dict()["items"]
            pods.sort(key=lambda p: p["metadata"]["creation_timestamp"])
            pod = pods[-1] if pods else None
            if pod is not None and pod["metadata"].get("deletion_timestamp"):
                self._wait_gone(pod["metadata"]["name"], ns, on_line)
            elif pod is not None:
                try:
                    for line in self.core.read_namespaced_pod_log(pod["metadata"]["name"], ns).splitlines():
                        on_line(line)
                except Exception as exc:  # logs are a convenience; the outcome comes from storage
                    on_line(f"(logs unavailable: {exc})")
            return bool(st.get("succeeded")), (_camel(pod) if pod else None)
        if while_running is not None and st.get("active"):
            try:
                while_running()
            except Exception as exc:  # growing in place is an optimisation: never lose the Job over it
                on_line(f"(in-place resize skipped: {exc})")
        return None

    def _wait_gone(self, pod: str, ns: str, on_line: LineFn, timeout: float = 180.0) -> None:
        from kubernetes.client.rest import ApiException

        on_line(f"pod {ns}/{pod} is being deleted: waiting for it to stop before going on")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_pod(pod, ns)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(self.poll_seconds)
        raise TimeoutError(f"pod {ns}/{pod} was still terminating after {timeout:.0f} s")


def _camel(obj):
    """The python client's snake_case dicts back into the API's camelCase (what the classifier reads)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            parts = k.split("_")
            out[parts[0] + "".join(p.title() for p in parts[1:])] = _camel(v)
        return out
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj
