"""How a run starts: join or start Ray (loopback only by default), build the Fleet, drive it, summarise."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import ray

from actors import driver_metrics
from actors.fleet import Fleet
from actors.loopback import loopback_only
from driver.loop import Driver
from medpo_ray.config import Config
from medpo_ray.critics import answer_vocabulary, counterfactual_balance
from medpo_ray.critics import preflight as critic_preflight
from medpo_ray.data.preflight import processor_refusals
from medpo_ray.data.splits import load_probe_records, load_train_split
from medpo_ray.errors import MedpoError
from medpo_ray.models.preflight import check_chat_template, check_gpus, check_lora_targets
from medpo_ray.streaming.steps import check_records


def _ray_init(cfg: Config) -> None:
    """Join the cluster of a `ray job submit` (RAY_ADDRESS set) or start a local one on loopback."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # inside a job: the runtime env is the job's
        return
    _check_port_free(cfg.metrics.host, cfg.metrics.export_port)
    if cfg.metrics.host.startswith("127."):
        # Without this Ray swaps 127.0.0.1 for the host's address and binds its ports on every interface.
        loopback_only()
    ray.init(num_cpus=max(cfg.run.ray_num_cpus or 0, os.cpu_count() or 1, _cpus_needed(cfg)),
             include_dashboard=False, _metrics_export_port=cfg.metrics.export_port,
             _node_ip_address=cfg.metrics.host, log_to_driver=cfg.run.log_actors)


def _check_port_free(host: str, port: int) -> None:
    # Ray's node does not report a taken metrics port: it times out starting, with no word of the port.
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise MedpoError(f"metrics.export_port {port} on {host} is not available ({e.strerror}): another "
                             "Ray or service holds it; pick a free port with --set metrics.export_port=N") from None


def _cpus_needed(cfg: Config) -> int:
    # Logical CPUs for the placement: stages interleave in strict mode, so a 2-core machine can host
    # learners (1 each) + engines (1 each) + light actors without real oversubscription.
    light = 0.25 * (cfg.critic.num_editors + cfg.corruption.num_workers)
    return int(math.ceil(cfg.train.num_learners * cfg.train.cpus_per_rank
                         + cfg.rollout.num_engines * cfg.rollout.cpus_per_engine + light))


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _without_reviewed_wrong(cfg: Config, records: dict) -> dict:
    """The training split less the records whose pairs a clinician marked "critic wrong" in the runs named by
    train.exclude_reviewed."""
    from medpo_ray.explore.reviews import REVIEWS_FILE, marked_wrong

    if not cfg.train.exclude_reviewed:
        return records
    for d in cfg.train.exclude_reviewed:
        if not (Path(d) / REVIEWS_FILE).is_file():
            raise MedpoError(f"train.exclude_reviewed: {d!r} has no {REVIEWS_FILE} (review a run with `medpo-ray explore`)")
    wrong = marked_wrong(cfg.train.exclude_reviewed)
    kept = {k: v for k, v in records.items() if k not in wrong}
    print(f"[data] {len(records) - len(kept)} record(s) left out: their pairs were marked 'critic wrong' in "
          f"{', '.join(cfg.train.exclude_reviewed)}")
    return kept


def train(cfg: Config, model_dir: str, data_dir: Path, resume: bool = False) -> dict:
    """Run the on-policy loop from `model_dir` (HF VLM); returns a summary with the ledger's counts."""
    records, quarantined = load_train_split(cfg, Path(data_dir))
    records = _without_reviewed_wrong(cfg, records)
    probe_records = load_probe_records(cfg, Path(data_dir))
    # Image sizes the model's processor cannot take, from the headers, before Ray (one processor load
    # for the training split and the guard's slice).
    unfit = processor_refusals([*records.values(), *(probe_records or [])], model_dir)
    refused = {k: unfit[k] for k in records if k in unfit}
    for rid, reason in list(refused.items())[:10]:
        print(f"[data] quarantined for the model's processor: record {rid!r}, {reason}")
    if refused:
        print(f"[data] {len(refused)} record(s) the model's processor refuses; {len(records) - len(refused)} left")
        records = {k: v for k, v in records.items() if k not in refused}
    if probe_records:
        probe_records = [r for r in probe_records if r.record_id not in unfit]
    check_records(cfg, records)
    check_chat_template(model_dir)
    check_lora_targets(model_dir, cfg)
    if not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():  # a local cluster: this machine's GPUs
        check_gpus(cfg, _local_gpus())
    vocab = answer_vocabulary(cfg.critic, records.values())
    balance = counterfactual_balance(cfg, records, vocab)
    model = critic_preflight(cfg.critic)  # an unreachable critic is named before Ray or any actor starts
    if model:
        print(f"[critic] {cfg.critic.base_url} answers; critic model {model!r}")
    _ray_init(cfg)
    check_gpus(cfg, ray.cluster_resources().get("GPU", 0))  # a joined cluster: what it has
    # What was refused before Ray started is counted now that metrics can be recorded.
    driver_metrics.quarantined([f"data:{b.field}" for b in quarantined]
                               + ["preflight:image"] * len(refused))
    t0 = time.monotonic()
    fleet = Fleet(cfg, model_dir, keep_rates=balance.rates() if balance is not None else None, vocab=vocab)
    try:
        driver = Driver(cfg, records, fleet, resume=resume, probe_records=probe_records, balance=balance)
        driver.run()
    finally:
        fleet.shutdown()
    summary = {"quarantined": len(quarantined), "refused_by_processor": len(refused), "steps": driver.step,
               "seconds": round(time.monotonic() - t0, 1), **driver.ledger.summary(),
               "checkpoint": str(driver.last_checkpoint),
               "weight_transport": fleet.weight_transport,
               # Per-step audit tables, written off the step's path: where they are and what a write took.
               "audit": str(driver.audit.dir), "audit_write_s_max": round(max(driver.audit.write_seconds, default=0.0), 4),
               **(driver.guard.summary(model_dir, driver.out) if driver.guard is not None else {})}
    (driver.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
