"""Checkpoints: a safetensors weights file and a JSON sidecar, written atomically, read without pickle.

A checkpoint of step ``s`` in directory ``d`` is two files:

* ``d/step_<s>-<sha8>.safetensors`` holds every tensor: the learner's
  ``state_dict`` (model weights and learner parameters such as Meta-SGD's
  learning rates) under ``model/``, the optimizer's state tensors under
  ``optim/<param>/<name>``, and the torch RNG states (``uint8`` tensors) under
  ``rng/<rank>/``.
* ``d/step_<s>.json`` (the *sidecar*) holds everything else: the weights file's
  name and SHA-256, the optimizer's structure and scalars, the Python and NumPy
  RNG states, the step, the run config and the model config.

Each file is written to a temporary file in the same directory, fsynced and
renamed into place with :func:`os.replace`; the sidecar goes last.  A crash in
between leaves a weights file that no sidecar refers to, and the previous
checkpoint intact.  :func:`load_checkpoint` validates everything (hash, keys,
shapes, dtypes, optimizer structure, model config) before it touches the model
or optimizer, and it never unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "list_checkpoints", "capture_rng", "restore_rng", "rng_to_bytes", "rng_from_bytes"]

FORMAT = "metabook-checkpoint-v1"
_SIDECAR = re.compile(r"^step_(\d+)\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model; nothing was loaded."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` restored."""

    path: Path
    step: int
    config: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    world_size: int = 1
    rng_restored: bool = False


# -- RNG states, as JSON + bytes --------------------------------------------------------
def capture_rng(device: torch.device | str | None = None) -> dict:
    """This process's RNG states: Python and NumPy (JSON-able), torch CPU and CUDA (bytes)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    rec = {"python": [version, list(state), gauss],
           "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(),
                                            "pos": int(np_state["state"]["pos"])}},
           "torch_cpu": torch.get_rng_state().numpy().tobytes(), "cuda": None}
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        rec["cuda"] = torch.cuda.get_rng_state(dev).numpy().tobytes()
    return rec


def restore_rng(rec: dict, device: torch.device | str | None = None) -> None:
    """Inverse of :func:`capture_rng` (validate the record first)."""
    version, state, gauss = rec["python"]
    random.setstate((version, tuple(state), gauss))
    np_state = dict(rec["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                         "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    torch.set_rng_state(_u8(rec["torch_cpu"]))
    dev = torch.device(device) if device is not None else None
    if rec.get("cuda") is not None and dev is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(_u8(rec["cuda"]), dev)


_restore_rng = restore_rng  # load_checkpoint's ``restore_rng`` flag shadows the name


def rng_to_bytes(rec: dict) -> bytes:
    """Encode a :func:`capture_rng` record as JSON bytes (to all-gather it across ranks)."""
    return json.dumps({**rec, "torch_cpu": rec["torch_cpu"].hex(),
                       "cuda": None if rec["cuda"] is None else rec["cuda"].hex()}).encode()


def rng_from_bytes(data: bytes) -> dict:
    """Inverse of :func:`rng_to_bytes`."""
    rec = json.loads(data)
    rec["torch_cpu"] = bytes.fromhex(rec["torch_cpu"])
    rec["cuda"] = None if rec["cuda"] is None else bytes.fromhex(rec["cuda"])
    return rec


def _u8(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())


def _check_rng(rec: Any, where: str) -> None:
    try:
        version, state, _ = rec["python"]
        random.Random().setstate((version, tuple(state), rec["python"][2]))
        key = np.asarray(rec["numpy"]["state"]["key"], dtype=np.uint32)
        np.random.RandomState().set_state({**rec["numpy"], "state": {"key": key,
                                                                    "pos": rec["numpy"]["state"]["pos"]}})
        torch.Generator().set_state(_u8(rec["torch_cpu"]))
    except Exception as e:  # noqa: BLE001 - any malformed state is a checkpoint error
        raise CheckpointError(f"{where}: malformed RNG state ({type(e).__name__}: {e})") from None


# -- files ------------------------------------------------------------------------------------
def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file next to ``path``, fsync, rename over ``path``, fsync the directory."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, unlike mkstemp
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Sidecar files in ``directory``, oldest step first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _SIDECAR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The sidecar of the highest step in ``directory``, or ``None``."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


# -- save -----------------------------------------------------------------------------------
def _jsonable(value: Any, what: str) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"cannot save {what}: {value!r} is not JSON-serializable") from None
    return value


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict] = {}
    for idx, entry in sd["state"].items():
        state[str(idx)] = {}
        for key, val in entry.items():
            if isinstance(val, torch.Tensor):
                name = f"optim/{idx}/{key}"
                tensors[name] = val
                state[str(idx)][key] = {"tensor": name}
            else:
                state[str(idx)][key] = {"value": _jsonable(val, f"optimizer state {idx}/{key}")}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"class": type(optimizer).__name__,
            "param_groups": _jsonable(groups, "optimizer param_groups"), "state": state}, tensors


def save_checkpoint(directory: str | os.PathLike, step: int, learner: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, *, rng: list[dict] | None = None,
                    config: dict | None = None, model_config: dict | None = None,
                    extra: dict | None = None, keep: int | None = None) -> Path:
    """Write the checkpoint of ``step`` atomically; returns the sidecar path.

    Args:
        learner: the module whose ``state_dict`` is saved (e.g. a ``MAML``/``MetaSGD``).
        optimizer: its state tensors go to the weights file, the rest to the sidecar.
        rng: one :func:`capture_rng` record per rank; default: this process only.
        config: the run configuration (JSON-able), stored for reference.
        model_config: what defines the model's shape; :func:`load_checkpoint`
            refuses a checkpoint whose ``model_config`` differs from the expected one.
        extra: JSON-able loop state (counters) to restore on resume.
        keep: keep only the newest ``keep`` checkpoints (older ones are deleted).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    step = int(step)
    tensors = {f"model/{k}": v for k, v in learner.state_dict().items()}
    opt_meta, opt_tensors = _optimizer_parts(optimizer) if optimizer is not None else (None, {})
    tensors.update(opt_tensors)
    rng = [capture_rng()] if rng is None else rng
    rng_meta = []
    for r, rec in enumerate(rng):
        tensors[f"rng/{r}/torch_cpu"] = _u8(rec["torch_cpu"])
        if rec.get("cuda") is not None:
            tensors[f"rng/{r}/cuda"] = _u8(rec["cuda"])
        rng_meta.append({"python": rec["python"], "numpy": rec["numpy"], "cuda": rec.get("cuda") is not None})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    data = st_save(tensors, metadata={"format": FORMAT, "step": str(step)})
    digest = hashlib.sha256(data).hexdigest()
    weights = d / f"step_{step:08d}-{digest[:8]}.safetensors"
    _atomic_write(weights, data)
    sidecar = {
        "format": FORMAT, "step": step,
        "weights": {"file": weights.name, "sha256": digest, "bytes": len(data)},
        "model": {k[len("model/"):]: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                  for k, v in tensors.items() if k.startswith("model/")},
        "model_config": _jsonable(model_config or {}, "model_config"),
        "config": _jsonable(config or {}, "config"),
        "optimizer": opt_meta, "rng": rng_meta, "world_size": len(rng),
        "extra": _jsonable(extra or {}, "extra"), "torch": torch.__version__,
    }
    path = d / f"step_{step:08d}.json"
    token = f"@rng-{secrets.token_hex(8)}@"  # the RNG states go on one line each, the rest indented
    text = json.dumps({**sidecar, "rng": token}, indent=1).replace(
        json.dumps(token), "[\n  " + ",\n  ".join(json.dumps(r) for r in rng_meta) + "\n ]")
    _atomic_write(path, text.encode())
    _prune(d, keep, keep_file=weights.name)
    return path


def _prune(d: Path, keep: int | None, keep_file: str) -> None:
    """Drop old checkpoints (sidecar first), then weights/temp files no sidecar refers to."""
    sidecars = list_checkpoints(d)
    if keep is not None and keep > 0:
        for old in sidecars[:-keep]:
            old.unlink(missing_ok=True)
        sidecars = sidecars[-keep:]
    referenced = {keep_file}
    for s in sidecars:
        try:
            referenced.add(json.loads(s.read_text())["weights"]["file"])
        except Exception:  # noqa: BLE001 - an unreadable sidecar keeps nothing alive
            pass
    for p in d.iterdir():
        orphan = p.suffix == ".safetensors" and p.name.startswith("step_") and p.name not in referenced
        if orphan or (p.name.startswith(".step_") and p.name.endswith(".tmp")):
            p.unlink(missing_ok=True)


# -- load -----------------------------------------------------------------------------------
def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and verify the sidecar and the weights file it names (hash and format)."""
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint (step_*.json) in {path}")
        path = latest
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint sidecar {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint sidecar {path} is unreadable or not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} sidecar")
    try:
        wname, wsha = meta["weights"]["file"], meta["weights"]["sha256"]
        int(meta["step"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: sidecar lacks weights file/sha256 or step") from None
    wpath = path.parent / wname
    if Path(wname).name != wname:
        raise CheckpointError(f"{path}: weights file name {wname!r} must be a plain file name")
    try:
        data = wpath.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file {wpath} is missing") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != wsha:
        raise CheckpointError(f"{wpath}: SHA-256 {digest[:16]}... does not match the sidecar's "
                              f"{str(wsha)[:16]}... (corrupt, truncated or replaced weights file)")
    try:
        tensors = st_load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{wpath}: not a valid safetensors file ({e})") from None
    return {**meta, "_path": str(path)}, tensors


def _check_model(meta: dict, tensors: dict, learner: nn.Module) -> dict[str, torch.Tensor]:
    where = meta["_path"]
    want = learner.state_dict()
    have = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unexpected:
        raise CheckpointError(f"{where}: model keys differ; missing from checkpoint: {missing[:8]}, "
                              f"not in the model: {unexpected[:8]}")
    for k, v in want.items():
        if tuple(have[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{where}: '{k}' has shape {tuple(have[k].shape)} in the checkpoint "
                                  f"but {tuple(v.shape)} in the model")
        if have[k].dtype != v.dtype:
            raise CheckpointError(f"{where}: '{k}' is {have[k].dtype} in the checkpoint but {v.dtype} "
                                  "in the model")
    return have


def _check_optimizer(meta: dict, tensors: dict, optimizer: torch.optim.Optimizer) -> dict:
    where, om = meta["_path"], meta.get("optimizer")
    if not isinstance(om, dict):
        raise CheckpointError(f"{where}: the checkpoint has no optimizer state")
    if om.get("class") != type(optimizer).__name__:
        raise CheckpointError(f"{where}: optimizer is {om.get('class')} in the checkpoint but "
                              f"{type(optimizer).__name__} here")
    cur = optimizer.state_dict()["param_groups"]
    groups = om.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(cur) or any(
            len(g.get("params", [])) != len(c["params"]) for g, c in zip(groups, cur)):
        raise CheckpointError(f"{where}: optimizer parameter groups do not match the model's parameters")
    groups = [{k: (tuple(v) if isinstance(c.get(k), tuple) and isinstance(v, list) else v)
               for k, v in g.items()} for g, c in zip(groups, cur)]
    shapes = {i: tuple(p.shape) for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state: dict[int, dict] = {}
    used = set()
    for idx, entry in om.get("state", {}).items():
        i = int(idx)
        if i not in shapes:
            raise CheckpointError(f"{where}: optimizer state for parameter {i}, which does not exist")
        state[i] = {}
        for key, spec in entry.items():
            if "tensor" in spec:
                name = spec["tensor"]
                if name not in tensors:
                    raise CheckpointError(f"{where}: optimizer tensor '{name}' missing from the weights file")
                t = tensors[name]
                if t.dim() and tuple(t.shape) != shapes[i]:
                    raise CheckpointError(f"{where}: optimizer tensor '{name}' has shape {tuple(t.shape)}, "
                                          f"parameter {i} has {shapes[i]}")
                state[i][key] = t
                used.add(name)
            else:
                state[i][key] = spec["value"]
    stray = sorted(k for k in tensors if k.startswith("optim/") and k not in used)
    if stray:
        raise CheckpointError(f"{where}: weights file holds optimizer tensors the sidecar does not describe: "
                              f"{stray[:5]}")
    return {"state": state, "param_groups": groups}


def load_checkpoint(path: str | os.PathLike, learner: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, *, model_config: dict | None = None,
                    rank: int = 0, restore_rng: bool = True,
                    device: torch.device | str | None = None) -> Checkpoint:
    """Validate a checkpoint completely, then load it into ``learner`` (and ``optimizer``).

    ``path`` is a sidecar (``step_*.json``) or a directory (its latest checkpoint).
    ``model_config``, when given, must equal the one saved.  The RNG states of
    ``rank`` are restored when present (they are absent if the checkpoint was
    written by fewer ranks).  Raises :class:`CheckpointError` and leaves
    everything untouched on any mismatch; never unpickles.
    """
    meta, tensors = _read(Path(path))
    where = meta["_path"]
    if model_config is not None and meta.get("model_config") != model_config:
        saved = meta.get("model_config") or {}
        diff = {k: (saved.get(k), model_config.get(k)) for k in sorted(set(saved) | set(model_config))
                if saved.get(k) != model_config.get(k)}
        raise CheckpointError(f"{where}: model config differs (checkpoint, now): {diff}")
    model_sd = _check_model(meta, tensors, learner)
    opt_sd = _check_optimizer(meta, tensors, optimizer) if optimizer is not None else None
    rec = None
    rngs = meta.get("rng") or []
    if restore_rng and rank < len(rngs):
        r = rngs[rank]
        key = f"rng/{rank}/torch_cpu"
        if key not in tensors or not isinstance(r, dict):
            raise CheckpointError(f"{where}: RNG state of rank {rank} is incomplete")
        cuda = tensors.get(f"rng/{rank}/cuda")
        rec = {**r, "torch_cpu": tensors[key].numpy().tobytes(),
               "cuda": None if cuda is None else cuda.numpy().tobytes()}
        _check_rng(rec, where)
    # Everything is valid: apply.
    learner.load_state_dict(model_sd, strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(opt_sd)
    if rec is not None:
        _restore_rng(rec, device)
    return Checkpoint(path=Path(where), step=int(meta["step"]), config=meta.get("config") or {},
                      model_config=meta.get("model_config") or {}, extra=meta.get("extra") or {},
                      world_size=int(meta.get("world_size", 1)), rng_restored=rec is not None)
