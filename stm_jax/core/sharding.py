"""Devices and layouts: a `data` mesh over every device of every host, and multi-host start-up.

Data parallelism only (docs/design.md section 5): the train state is replicated, batches are split
over the `data` axis, and XLA inserts the gradient all-reduce. The mesh axis is of type Auto
(GSPMD propagation). jax 0.10's `jax.make_mesh` defaults to Explicit axes, under which sharding
is part of every array's type and ambiguous ops must name their output sharding; the model's
reshapes (e.g. CMM's 2x2 pooling as reshape-max) are then rejected, and data parallelism gains
nothing from explicit types.
"""

import os
from typing import Any

from absl import logging
import jax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from input_pipeline import errors

DATA_AXIS = 'data'


def make_mesh(devices: list[Any] | None = None) -> jax.sharding.Mesh:
  """Returns a 1-D mesh named `data` over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  if devices == jax.devices():
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,))
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The layout of the train state: a full copy on every device."""
  return NamedSharding(mesh, P())


def data_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The layout of a batch: rows split over the `data` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh, micro_batches: int = 1) -> None:
  """Checks that every micro-batch splits evenly over the devices and the batch over the hosts."""
  devices = mesh.devices.size
  if global_batch % (micro_batches * devices):
    raise errors.ConfigError(f'config.batch_size={global_batch}: must be a multiple of '
                             f'{micro_batches * devices} ({devices} devices x '
                             f'{micro_batches} micro-batches, optim.grad_accum_steps)')
  if global_batch % jax.process_count():
    raise errors.ConfigError(f'config.batch_size={global_batch}: must be a multiple of the '
                             f'{jax.process_count()} processes')


def global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Assembles every process's rows into global arrays sharded on `data`.

  Each process passes its own rows; the global batch is the processes' rows in process order.
  """
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def _env_int(name: str) -> int:
  try:
    return int(os.environ.get(name, '1'))
  except ValueError:
    return 1


def cluster_detected() -> bool:
  """Whether the environment says this is one of several processes of a job.

  Recognised: an explicit `JAX_COORDINATOR_ADDRESS`, SLURM or Open MPI with more than one task,
  a GKE TPU slice with several workers (`TPU_WORKER_HOSTNAMES`), and any Cloud TPU VM (a TPU pod
  worker; on a single-host TPU `jax.distributed.initialize` finds one process and is harmless).
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  if _env_int('SLURM_NTASKS') > 1 or _env_int('SLURM_STEP_NUM_TASKS') > 1:
    return True
  if _env_int('OMPI_COMM_WORLD_SIZE') > 1:
    return True
  if ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    return True
  tpu_env = bool(os.environ.get('TPU_ACCELERATOR_TYPE') or os.environ.get('TPU_WORKER_ID'))
  return os.path.exists('/dev/accel0') or (os.path.isdir('/dev/vfio') and tpu_env)


def maybe_initialize_distributed(mode: str = 'auto', coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Starts `jax.distributed` for a multi-process run; returns whether it did.

  `mode`: 'yes' always, 'no' never, 'auto' when `cluster_detected()` or a coordinator address
  is given. Without the three arguments JAX takes them from the cluster environment (TPU pods,
  SLURM, Open MPI, Kubernetes); elsewhere pass all three (every process the same address).
  Must run before anything touches the devices.
  """
  if mode not in ('auto', 'yes', 'no'):
    raise ValueError(f"distributed mode must be 'auto', 'yes' or 'no', got {mode!r}")
  if mode == 'no' or (mode == 'auto' and not coordinator_address and not cluster_detected()):
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def to_host(tree: Any) -> Any:
  """Numpy copies of replicated arrays (each process reads its own replica, no communication)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
