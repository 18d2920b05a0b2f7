"""A MOUS's flow run in a pod of its own (MOUSFLOW_FLOW_RUNNER=pod): the Job that runs it, how its outcome comes
back, and the pod's entry point (`python -m mousflow_operator.flow_pod`).

Why (issue 16, measured with bench/control_plane.py, figures in the README): run in the operator's threads, every
flow run brings Prefect's engine and the xarray opens that size its stages into the operator's memory (300 MB idle
with Prefect imported, 550-640 MB with two flows running), so the operator's memory grows with the work done and
the flows cannot be spread over nodes. In a pod, the flow run is the same code (`runs.execute_flow_run`, shared
with the thread mode) under the MOUS namespace's own S3 credentials and a service account that may manage stage
Jobs in that namespace only; the operator keeps the control plane: it creates one Job per (MOUS, run) and learns
the run's end from the Job watch and the pod's termination message, with no polling and no flow bytes.

The Job is the flow run's keeper: its name is deterministic for the run (a restarted operator adopts it), it is
owned by the MOUS (deleted with it), and a flow pod that is killed (node drained, evicted) is replaced by the Job
controller (`backoffLimit`) once it has stopped (`podReplacementPolicy: Failed`, so two flow pods of a run never
overlap); the replacement executes the same Prefect flow run again, whose stages skip what their checkpoints hold
and adopt their Jobs by name.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from mousflow.model import API_VERSION, KIND, uid_digest
from mousflow.pipeline.kubernetes import JobSettings, s3_env
from mousflow.pod_security import restricted_container_security, restricted_pod_security, tmp_mount, tmp_volume

FLOW_RUN_LABEL = "mousflow.io/flow-run"
"""On a flow-run Job and its pod: the MOUS's digest (the Job watch's selector; not mousflow.io/mous, which marks
stage Jobs)."""
A_RUN_KEY = "mousflow.io/run-key"
A_MOUS_KEY = "mousflow.io/mous-key"
A_FLOW_RUN_ID = "mousflow.io/flow-run-id"
TERMINATION_LOG = "/dev/termination-log"
MESSAGE_LIMIT = 3000
"""Characters of an outcome's message kept: the termination message holds 4096 bytes."""


@dataclass(frozen=True)
class FlowPodSettings:
    """What the platform decides about flow-run pods (the operator's environment; chart `operator.flowRunner`)."""

    service_account: str = "mousflow-flow-runner"
    """In each MOUS namespace: may create, read and delete stage Jobs and read their pods (the chart makes it)."""
    prefect_api_url: str = ""
    """The Prefect API as pods reach it."""
    cpu: str = "250m"
    memory: str = "1Gi"
    memory_limit: str = "2Gi"
    backoff_limit: int = 3
    """Flow pods lost (killed, evicted) before a run gives up as Interrupted; each resumes the same run."""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> FlowPodSettings:
        return cls(
            service_account=env.get("MOUSFLOW_FLOW_RUNNER_SERVICE_ACCOUNT") or cls.service_account,
            prefect_api_url=env.get("MOUSFLOW_FLOW_RUNNER_PREFECT_API_URL") or env.get("PREFECT_API_URL") or "",
            cpu=env.get("MOUSFLOW_FLOW_RUNNER_CPU") or cls.cpu,
            memory=env.get("MOUSFLOW_FLOW_RUNNER_MEMORY") or cls.memory,
            memory_limit=env.get("MOUSFLOW_FLOW_RUNNER_MEMORY_LIMIT") or cls.memory_limit,
            backoff_limit=int(env.get("MOUSFLOW_FLOW_RUNNER_BACKOFF_LIMIT") or cls.backoff_limit),
        )


def flow_job_name(uid: str, run_tag: str) -> str:
    return f"mousflow-{uid_digest(uid)}-{run_tag}-flow"


def build_flow_run_job_spec(jobs: JobSettings, pod: FlowPodSettings, *, uid: str, mous_key: str, run_key: str,
                            run_tag: str, run_name: str, parameters: dict, output_uri: str,
                            history: str = "") -> dict:
    """The Job manifest of one flow run in a pod (a pure function of its arguments). The run's parameters go in
    an environment variable: they name the MOUS, its launcher and the platform's stage settings, never a
    credential (the S3 keys come from the namespace's Secret, as for stage pods)."""
    name = flow_job_name(uid, run_tag)
    labels = {"app.kubernetes.io/name": "mousflow", "app.kubernetes.io/component": "flow-run",
              FLOW_RUN_LABEL: uid_digest(uid)}
    run = {"key": run_key, "name": run_name, "parameters": parameters, "output_uri": output_uri, "job": name}
    env = [*s3_env(jobs),
           {"name": "HOME", "value": "/tmp"},
           {"name": "PREFECT_HOME", "value": "/tmp/prefect"},
           {"name": "PREFECT_API_URL", "value": pod.prefect_api_url},
           {"name": "MOUSFLOW_FLOW_RUN", "value": json.dumps(run, sort_keys=True)}]
    if history:
        env.append({"name": "MOUSFLOW_HISTORY", "value": history})
    metadata = {"name": name, "namespace": jobs.namespace, "labels": labels,
                "annotations": {"mousflow.io/uid": uid, A_RUN_KEY: run_key, A_MOUS_KEY: mous_key}}
    if jobs.owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": KIND, "name": jobs.owner[0],
                                        "uid": jobs.owner[1], "controller": False, "blockOwnerDeletion": False}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": pod.backoff_limit,
            "podReplacementPolicy": "Failed",
            "ttlSecondsAfterFinished": jobs.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": pod.service_account,
                "securityContext": restricted_pod_security(),
                "containers": [{
                    "name": "flow",
                    "image": jobs.image,
                    "imagePullPolicy": jobs.image_pull_policy,
                    "command": ["python", "-m", "mousflow_operator.flow_pod"],
                    "env": env,
                    "resources": {"requests": {"cpu": pod.cpu, "memory": pod.memory},
                                  "limits": {"memory": pod.memory_limit}},
                    "securityContext": restricted_container_security(),
                    "volumeMounts": [tmp_mount()],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }],
                "volumes": [tmp_volume()],
            }},
        },
    }


def flow_job_finished(job: dict) -> bool:
    """Whether the Job reached its end (Complete or Failed), API or python-client form."""
    st = job.get("status") or {}
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in st.get("conditions") or [])


def flow_job_outcome(job: dict, pods: list[dict]) -> tuple[str, str, str, str]:
    """(state, reason, message, flow run id) of a finished flow-run Job, from its newest pod's termination
    message (the outcome the pod wrote, JSON); a Job that failed without one lost its pods (killed, evicted,
    out of memory) more often than its backoff limit allows: Interrupted, which a new attempt resumes."""
    st = job.get("status") or {}
    succeeded = any(c.get("type") == "Complete" and c.get("status") == "True" for c in st.get("conditions") or [])
    message = ""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")
                                              or (p.get("metadata") or {}).get("creation_timestamp") or "")):
        for cs in (pod.get("status") or {}).get("containerStatuses") or \
                (pod.get("status") or {}).get("container_statuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            message = term.get("message") or message
    if succeeded:
        try:
            doc = json.loads(message)
            return doc["state"], doc.get("reason", ""), doc.get("message", ""), doc.get("flow_run_id", "")
        except (ValueError, KeyError, TypeError):
            return "failed", "Error", f"the flow-run pod gave no outcome: {message[:200]!r}", ""
    name = (job.get("metadata") or {}).get("name", "")
    last = message.strip().splitlines()[-1] if message.strip() else "no message"
    return ("failed", "Interrupted",
            f"the flow-run pods of Job {name} were lost {st.get('failed', 0)} time(s); last: {last}"[:MESSAGE_LIMIT],
            "")


def _annotate_own_job(job: str, flow_run_id: str) -> None:
    """The flow run's id on the pod's Job, where the operator's Job watch sees it (status.flowRunId)."""
    from kubernetes import client

    from mousflow.kube_config import load_kube_config

    namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read().strip()
    load_kube_config()
    client.BatchV1Api().patch_namespaced_job(job, namespace,
                                             {"metadata": {"annotations": {A_FLOW_RUN_ID: flow_run_id}}})


def main() -> int:
    from mousflow_operator.runs import execute_flow_run

    run = json.loads(os.environ["MOUSFLOW_FLOW_RUN"])

    def announce(flow_run_id: str) -> None:
        print(f"flow run {run['name']}: {flow_run_id}", flush=True)
        try:
            _annotate_own_job(run["job"], flow_run_id)
        except Exception as exc:  # a convenience for status.flowRunId: never the run's failure
            print(f"could not annotate Job {run['job']}: {exc}", file=sys.stderr, flush=True)

    outcome, flow_run_id = execute_flow_run(run["key"], run["name"], run["parameters"], run["output_uri"],
                                            on_flow_run=announce)
    doc = {"state": outcome.state, "reason": outcome.reason, "message": outcome.message[:MESSAGE_LIMIT],
           "flow_run_id": flow_run_id}
    print(f"flow run {run['name']}: {outcome.state} {outcome.reason} {outcome.message[:500]}", flush=True)
    try:
        with open(TERMINATION_LOG, "w") as f:
            json.dump(doc, f)
    except OSError as exc:  # not in a pod: the line above is the outcome
        print(f"could not write {TERMINATION_LOG}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
