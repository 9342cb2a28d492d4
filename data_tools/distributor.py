"""Where a data stage (shard build, embed, index build) runs: local processes, or tasks on a Ray cluster.

    with ray_session(config) as ray:                 # joins --ray-address, or starts a local Ray
        results = run_tasks(ray, remote_fn, jobs, ...)

`run_tasks` submits one Ray task per partition, shows one progress bar over
all of them, lets Ray rerun a failed task (`max_retries`, application errors
included), and turns a task that fails for good into one error naming its
partition. Tasks write their outputs under temporary names and rename them
when whole, so a failed task leaves nothing that looks complete.

Ray is an optional dependency (`pip install 'clipline[ray]'`); nothing here
imports it until a command asks for `--distributor ray`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from tqdm import tqdm

from data_tools.errors import DataError

Distributor = Literal["local", "ray"]


@dataclass(frozen=True, kw_only=True)
class DistributorConfig:
    """Where the work runs."""

    distributor: Distributor = "local"
    """local: processes on this machine; ray: one task per partition on a Ray cluster (shared --out path)."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. auto, or HOST:6379); default: start a local Ray on this machine."""
    max_retries: int = 2
    """Times Ray reruns a failed task before the command fails, naming the task's partition."""


def import_ray(error: type[Exception] = DataError) -> ModuleType:
    """The `ray` module, or `error` saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as err:
        raise error("`distributor` ray needs Ray: pip install 'clipline[ray]' (or 'ray[data]'), "
                    "or use `distributor` local") from err


@contextlib.contextmanager
def ray_session(config: DistributorConfig, error: type[Exception] = DataError) -> Iterator[ModuleType]:
    """Ray, initialised: the running session if there is one, else `config.ray_address` or a new local Ray.

    A session started here is shut down on the way out; one started by the caller is left running.
    """
    ray = import_ray(error)
    if ray.is_initialized():
        yield ray
        return
    if config.ray_address is None:  # a busy machine starts Ray's agents slowly; the raylet's default wait is short
        os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    try:
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as err:  # noqa: BLE001 - Ray raises plain Exception (and others) for a failed start
        ray.shutdown()
        where = config.ray_address or "a local Ray"
        raise error(f"cannot start or join {where}: {str(err).splitlines()[0][:200]}; "
                    "check `ray_address` (`ray status` on the head node)") from err
    try:
        yield ray
    finally:
        ray.shutdown()


def run_tasks(ray: ModuleType, task: Callable[..., Any], jobs: Sequence[tuple], names: Sequence[str], *,
              config: DistributorConfig, weights: Sequence[int] | None = None, desc: str = "tasks",
              unit: str = "task", progress: bool = True, error: type[Exception] = DataError) -> list[Any]:
    """Run `task(*job)` as one Ray task per job; results in job order.

    `names` say which partition each job is (for the error of a task that fails for good);
    `weights` advance the one progress bar (default 1 per task).
    """
    remote = ray.remote(task).options(num_cpus=1, max_retries=max(0, config.max_retries), retry_exceptions=True)
    pending = {remote.remote(*job): i for i, job in enumerate(jobs)}
    results: list[Any] = [None] * len(jobs)
    weights = list(weights) if weights is not None else [1] * len(jobs)
    bar = tqdm(total=sum(weights), desc=desc, unit=unit, disable=not progress)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayError as err:
                raise error(f"{desc}: task for {names[i]} failed after {1 + max(0, config.max_retries)} tries: "
                            f"{task_failure(err)}; fix the cause and rerun (finished parts are kept)") from err
            bar.update(weights[i])
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref)
    return results


def task_failure(err: BaseException) -> str:
    """The last line of what went wrong inside a Ray task (its own exception, not Ray's wrapping)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        lines = [line for line in str(err).splitlines() if line.strip()]
        text = lines[-1] if lines else type(err).__name__
    return " ".join(text.split())[:300]
