"""From a path to a model: which file, which architecture, which weights. The one place that does it.

- :func:`find_checkpoint`: a run directory or a file -> the checkpoint file (``best`` or ``last``).
- :func:`find_config`: a YAML path or a preset name (``lka-nafnet-w12``) -> the config file.
- :func:`weights_file`: a registry name (see :mod:`.pretrained`; downloaded once, verified, cached) or a path ->
  the weights file.
- :func:`load_spec`: any of those (a registry name, a checkpoint, run directory, safetensors export, or a
  config/preset plus weights) -> a :class:`ModelSpec`: the architecture, the weights and where they came from.
- :func:`resolve_source`: the command line's ``--ckpt`` / ``--model`` -> :func:`load_spec`'s arguments.
- :func:`build_model`: a registered name and its arguments -> the network (the training loop, ``info``, ``infer``,
  ``eval`` and ``export`` all build through it), sized first by :func:`check_size` (on the meta device, so that a
  crafted width or block count is refused before anything is allocated).
- :func:`check_recorded`: the architecture and config a file records, checked before anything is built from them.
- :func:`load_weights`: a state dict into a network, strictly, with one readable message on any mismatch.
- :func:`init_state`: the weights a training run starts from (``model.init_from``).

Files are recognised by their bytes, not their names: PyTorch files (zip or legacy pickle) are read with
``torch.load(weights_only=True)``, so a pickle that carries code is refused, naming what it would call (found with
:mod:`pickletools`, which runs nothing); safetensors files directly, their metadata checked; nafrestore's
TorchScript exports through the safetensors copy of the weights embedded in the archive (read with ``zipfile``,
so none of the archive's code runs); ONNX exports, other TorchScript files, empty files and anything else get a
message saying what the file is and what to pass instead. Accepted layouts: a nafrestore checkpoint
(``{"model_name", "model_args", "model", ...}``), BasicSR/NAFNet release files (``{"params": ...}`` and/or
``{"params_ema": ...}``), ``{"state_dict": ...}``, and bare state dicts, with ``module.`` (DataParallel) or
``_orig_mod.`` (torch.compile) prefixes stripped.
"""

from __future__ import annotations

import inspect
import json
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from torch import nn
from torch.overrides import TorchFunctionMode

from .config import config_from_dict, config_to_dict, load_config
from .errors import CheckpointError, ConfigError, NafrestoreError
from .models import MODELS, create_model
from .models.gated import pair_state
from .models.pretrained import DEFAULT, PretrainedModel, find_pretrained, model_names, pretrained_file
from .registry import did_you_mean

_PREFIXES = ("module.", "_orig_mod.")
_CONFIG_SUFFIXES = (".yaml", ".yml")
_ROOT = Path(__file__).resolve().parents[1]  # the repository: its configs/ folder holds the presets
#: The extra file of a nafrestore TorchScript export that holds its unfolded weights and architecture, in the
#: layout of the safetensors export (stored in the archive as ``<archive>/extra/nafrestore.safetensors``).
TORCHSCRIPT_WEIGHTS_ENTRY = "nafrestore.safetensors"
#: The model arguments of a network's residual filter: no parameters, so weights trained with one setting load
#: into another (``pair_spec(refilter=True)``).
RESIDUAL_FILTER_ARGS = (
    "residual_highpass",
    "residual_highpass_gate",
    "residual_highpass_luma",
    "residual_highpass_flat",
    "residual_nonlocal_means",
    "residual_highpass_gate_estimate",
    "residual_highpass_coarse",
)
#: The version of the metadata nafrestore writes beside the weights of its safetensors and TorchScript exports
#: (:meth:`ModelSpec.metadata`); files of another version are refused rather than read by guesswork.
METADATA_VERSION = 1
# The globals (functions and classes) a pickle of tensors and plain containers refers to: torch's tensor and storage
# rebuilders, dtypes and sizes, OrderedDict, the codec of protocol 2 bytes, a few builtin types. Any other global is
# code that unpickling would import and call (os.system, print, a model class and its __setstate__).
_PLAIN_MODULES = ("torch", "collections", "_codecs")
_PLAIN_BUILTINS = ("builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.complex", "builtins.slice")
# The opcodes that push a string: STACK_GLOBAL (protocol 4+) takes its module and name from the two last pushed.
_STRING_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING")
# A legacy torch.save file is five consecutive pickles (magic number, protocol, system info, the object, the storage
# keys), then raw tensor bytes, which are not scanned.
_MAX_PICKLES = 5
_MAX_PICKLE_SCAN = 1 << 20  # bytes: files of no known kind are scanned for code up to this size


# ------------------------------------------------------------------------------------------------------------
# Which file


def find_checkpoint(path: str | Path, prefer: str = "best", *, fallback: bool = True, names: bool = False) -> Path:
    """The checkpoint file that ``path`` names.

    Args:
        path: a checkpoint file, or a run directory written by ``nafrestore train``.
        prefer: in a run directory, ``best`` (the validated weights, for inference) or ``last`` (the full training
            state, for resuming).
        fallback: in a run directory without the preferred file, take the other one.
        names: the caller takes pretrained models' names too (see :mod:`.pretrained`): a path that does not exist
            is then said not to be one either, with the nearest name.

    Raises:
        CheckpointError: nothing there, saying what was looked for.
    """
    if prefer not in ("best", "last"):
        raise ValueError(f"prefer must be 'best' or 'last', got {prefer!r}")
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir() and names:
        raise CheckpointError(
            f"{path} does not exist, and it is not a pretrained model's name.{did_you_mean(str(path), model_names())}"
            f" Give a model name (`nafrestore models` lists them), a checkpoint file (.pt/.pth/.safetensors) or a run "
            f"directory written by `nafrestore train`."
        )
    if not path.is_dir():
        raise CheckpointError(
            f"{path} does not exist. Give a checkpoint file (.pt/.pth/.safetensors) or a run directory written by "
            f"`nafrestore train`."
        )
    order = [prefer, *(["last" if prefer == "best" else "best"] if fallback else [])]
    for name in order:
        candidate = path / "checkpoints" / f"{name}.pt"
        if candidate.is_file():
            return candidate
    wanted = " or ".join(f"checkpoints/{name}.pt" for name in order)
    raise CheckpointError(
        f"{path} is a folder without {wanted}: give a run directory written by `nafrestore train` that has trained "
        f"until its first checkpoint, or the path of a checkpoint file."
    )


def find_config(source: str | Path) -> Path | None:
    """The YAML file ``source`` names: a .yaml/.yml path, or a preset name such as ``lka-nafnet-w12`` (looked up in
    ``./configs`` and then in the project's ``configs/``); None when it names neither."""
    path = Path(source)
    if path.suffix in _CONFIG_SUFFIXES:
        return path
    if path.exists() or len(path.parts) != 1:
        return None
    for folder in (Path.cwd() / "configs", _ROOT / "configs"):
        candidate = folder / f"{path.name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def registry_name(source: str | Path | None) -> PretrainedModel | None:
    """The registry entry ``source`` names, or None: for a path that exists, for anything not in the registry."""
    if source is None or Path(source).exists():
        return None
    return find_pretrained(source)


def weights_file(source: str | Path) -> Path:
    """The weights file ``source`` names: a registry name (the file downloaded once, sha256-verified, cached; see
    :mod:`.pretrained`), a checkpoint file, or a run directory (its ``checkpoints/best.pt``).

    Raises:
        CheckpointError: nothing there; DownloadError: a registry file that cannot be fetched.
    """
    entry = registry_name(source)
    if entry is not None:
        return pretrained_file(entry.name)  # type: ignore[return-value]
    return find_checkpoint(source, names=True)


def preset_config(entry: PretrainedModel) -> Path:
    """The config file of a registry entry's preset: the project's ``configs/<preset>.yaml`` (not a file of the same
    name in ``./configs``, which may describe another architecture), else wherever :func:`find_config` finds it."""
    own = _ROOT / "configs" / f"{entry.preset}.yaml"
    found = own if own.is_file() else find_config(str(entry.preset))
    if found is None or not found.is_file():
        raise CheckpointError(
            f"The model {entry.name} is built from the preset {entry.preset}, but {own} is missing (nafrestore "
            f"installed without its configs/ folder). Install nafrestore from its source tree (pip install -e .), or "
            f"give the architecture yourself: --model CONFIG.yaml --ckpt {entry.file}."
        )
    return found


# ------------------------------------------------------------------------------------------------------------
# Reading files


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or weights file safely onto the CPU.

    Reads PyTorch files (zip or legacy pickle, ``weights_only=True``), safetensors files (with the architecture
    from their metadata when nafrestore wrote them) and nafrestore TorchScript exports (the weights embedded in the
    archive, without loading its code), whatever their suffix.

    Returns:
        The loaded mapping; for safetensors files and TorchScript exports ``{"model": state dict, **metadata}``.

    Raises:
        CheckpointError: the file is missing, empty, truncated, carries code, or is something else (an ONNX
            export, a TorchScript file without embedded weights, unrelated bytes), saying what it is and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Give the path of a .pt/.pth file or a run directory.")
    kind = _file_kind(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torchscript":
        return _read_torchscript(path)
    if kind in ("torch", "pickle"):
        return _torch_load(path)
    # A protocol 0/1 pickle has no PROTO opcode to know it by; one that carries code is small (its length fields
    # could otherwise make the scan read a large unrelated file whole).
    code = _code_globals(path) if kind == "unknown" and path.stat().st_size <= _MAX_PICKLE_SCAN else []
    raise CheckpointError(_code_message(path, code) if code else _not_loadable_message(path, kind))


def _file_kind(path: Path) -> str:
    """What a file holds, from its first bytes (and its suffix where the bytes cannot tell): ``empty``, ``torch``
    (a torch.save zip), ``torchscript``, ``zip`` (another zip archive), ``safetensors``, ``pickle`` (legacy
    torch.save), ``onnx`` or ``unknown``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({_first_line(exc)}). Check its permissions."
        ) from None
    if size == 0:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if 0 < header_len <= size - 8 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        return "safetensors"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # PROTO opcode, protocol 2-5: legacy torch.save (protocol 2)
        return "pickle"
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(head):
        return "onnx"
    if path.suffix.lower() == ".safetensors":
        return "safetensors"  # a damaged safetensors file: its reader says what is wrong
    return "unknown"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "torch"  # e.g. a truncated torch.save file: torch.load reports it
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        return "torchscript"  # TorchScript archives hold the module's code (and data.pkl, like checkpoints)
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "torch"
    return "zip"


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (``ir_version``, a small varint) followed by another field tag."""
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 0x7F:
        return False
    return 2 <= head[2] >> 3 <= 25 and head[2] & 0x07 in (0, 2)


def _not_loadable_message(path: Path, kind: str) -> str:
    if kind == "empty":
        return (
            f"Checkpoint {path} is empty (0 bytes): its save or download was interrupted. Re-download or re-save it, "
            f"or use another checkpoint of the run (e.g. checkpoints/best.pt instead of last.pt)."
        )
    if kind == "onnx":
        return (
            f"{path} is an ONNX export: it holds the folded inference graph, from which nafrestore cannot rebuild "
            f"the model. Run it with onnxruntime (onnxruntime.InferenceSession), or pass the .pt checkpoint or "
            f".safetensors export it was made from."
        )
    if kind == "zip":
        return (
            f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl inside). Give a .pt/.pth checkpoint, "
            f"a .safetensors file or a run directory."
        )
    with open(path, "rb") as f:
        head = f.read(8).hex(" ")
    return (
        f"{path} is not a PyTorch checkpoint, safetensors file or nafrestore export (it starts with the bytes "
        f"{head}). Give a .pt/.pth checkpoint, a .safetensors file or a run directory written by `nafrestore train`."
    )


def _torch_load(path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol other than 2: the errors below say more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the global it refused ("GLOBAL posix.system"); a pickle it could not parse that far (protocol
        # 4, which torch.save never writes) is scanned for them.
        code = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", str(exc)) + _code_globals(path)))
        if code:
            raise CheckpointError(_code_message(path, code)) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint, or it is corrupt: its pickle data cannot be read "
            f"({_unpickler_detail(exc)}). Re-download or re-save it."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Cannot read checkpoint {path}: {_first_line(exc)}. The file may be truncated or not a PyTorch file; "
            f"re-download or re-save it."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict or checkpoint dict.")
    return dict(obj)


def _code_message(path: Path, code: list[str]) -> str:
    """The refusal of a pickle that holds code: the globals it would call (``code``), and that none of it ran."""
    names = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
    return (
        f"Refusing to load {path}: the file holds code (it refers to the Python functions or classes {names}), "
        f"which unpickling it (pickle.load, or torch.load with weights_only=False) would run. It was not run: "
        f"nafrestore reads checkpoints with weights_only=True and stopped there. A checkpoint needs only tensors; if "
        f"you trust the file, re-save its weights alone (torch.save(obj['params'] or obj.state_dict(), "
        f"'weights.pth')), or ask its author for a .safetensors file."
    )


def _code_globals(path: Path) -> list[str]:
    """The globals a pickle file refers to that are not plain data (see ``_PLAIN_MODULES``), as ``module.name``.

    Read with :mod:`pickletools`, which parses the opcodes and imports or calls nothing: a torch.save zip's
    ``data.pkl``, else the file's consecutive pickles. Only pickles that parse to their end count, so bytes that
    merely start like one name nothing.
    """
    found: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                entry = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if entry is not None:
                    with archive.open(entry) as f:
                        _scan_pickles(f, found)
        else:
            with open(path, "rb") as f:
                _scan_pickles(f, found)
    except (OSError, zipfile.BadZipFile, ValueError):
        pass
    return [g for g in dict.fromkeys(found) if g not in _PLAIN_BUILTINS and g.split(".")[0] not in _PLAIN_MODULES]


def _scan_pickles(f: IO[bytes], found: list[str]) -> None:
    """Append to ``found`` the globals of each complete pickle read from ``f`` (at most ``_MAX_PICKLES``)."""
    for _ in range(_MAX_PICKLES):
        names: list[str] = []
        pushed: list[Any] = []  # what the opcodes pushed, strings as themselves (STACK_GLOBAL pops two)
        memo: dict[Any, Any] = {}
        try:
            for op, arg, _pos in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))  # pickletools gives "module name"
                elif op.name == "STACK_GLOBAL":
                    last = pushed[-2:]
                    names.append(".".join(last) if all(isinstance(x, str) for x in last) and last else "(unnamed)")
                elif op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if op.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(arg))
                elif op.name != "FRAME":
                    pushed.append(arg if op.name in _STRING_OPS else None)
        except ValueError:  # not (or no longer) a pickle: raw tensor bytes, the end of the file, garbage
            return
        found.extend(names)


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (200 characters at most), else its type name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:200]
    return type(exc).__name__


def _unpickler_detail(exc: BaseException) -> str:
    """The useful part of a weights_only refusal (e.g. ``Unsupported operand 149``), which torch puts after
    several lines of advice (to retry with ``weights_only=False``, which nafrestore never does); else the first line
    that is not that advice."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
    if found is not None:
        return found.group(1).split(". ")[0].strip().rstrip(".")[:200]  # its first sentence; the rest is advice
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "weights_only" not in line]
    useful = [line for line in lines if not line.startswith(advice)]
    return useful[0][:200] if useful else type(exc).__name__


def _read_safetensors(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"Cannot read safetensors file {path}: {exc}.") from None
    return _checkpoint_from(tensors, meta, path)


def _checkpoint_from(tensors: dict[str, torch.Tensor], meta: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The checkpoint dict of safetensors weights: ``{"model": tensors}`` plus nafrestore's metadata, if any
    (checked: :func:`_read_metadata`)."""
    ckpt: dict[str, Any] = {"model": tensors}
    if "nafrestore" in meta:
        ckpt.update(_read_metadata(meta["nafrestore"], path))
    return ckpt


def _read_metadata(text: str, path: Path) -> dict[str, Any]:
    """nafrestore's metadata of an export (the ``nafrestore`` entry of its safetensors header, see
    :meth:`ModelSpec.metadata`), checked to be a JSON object of a known ``format_version``. :func:`load_spec` checks
    the architecture and config it records (:func:`check_recorded`) before building anything from them.

    Raises:
        CheckpointError: naming the file and what is wrong.
    """
    where = f"{path}: its metadata (the 'nafrestore' entry of the safetensors header)"
    again = (
        "export it again from its checkpoint (nafrestore export CHECKPOINT --format safetensors), or give its "
        "weights with the config of their architecture (--model CONFIG --ckpt FILE)."
    )
    damaged = f"The file is damaged, or was not written by nafrestore: {again}"
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; RecursionError: deep nesting
        raise CheckpointError(f"{where} is not valid JSON ({_first_line(exc)}). {damaged}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{where} is a JSON {type(meta).__name__}, not an object with format_version, model_name, model_args and "
            f"config. {damaged}"
        )
    version = meta.get("format_version")
    if version != METADATA_VERSION or isinstance(version, bool):
        raise CheckpointError(
            f"{where} has format_version {json.dumps(version)[:80]}; this nafrestore reads version {METADATA_VERSION} "
            f"only. If a newer nafrestore wrote the file, upgrade nafrestore; else it is damaged: {again}"
        )
    return meta


def check_recorded(record: Mapping[str, Any], where: str) -> None:
    """Check the architecture a checkpoint or export records (``model_name``, ``model_args``, ``tlc_train_size``,
    ``config``) before anything is built from it: the types, a registered name, and the config as a config file is
    checked (:func:`~nafrestore.config.config_from_dict`). The size is checked when the network is built
    (:func:`check_size`).

    Args:
        record: the checkpoint dict or the export's metadata.
        where: the file (and part of it) for messages.

    Raises:
        CheckpointError: naming ``where`` and the entry.
    """
    name, args, tlc = record.get("model_name"), record.get("model_args"), record.get("tlc_train_size")
    fix = "The file is damaged or was edited; give the checkpoint it came from, or its weights with a config."
    if not isinstance(name, str) or name not in MODELS:
        raise CheckpointError(
            f"{where}: model_name is {json.dumps(name)[:80]}, not a registered model "
            f"({', '.join(MODELS.names())}).{did_you_mean(str(name), MODELS.names())} {fix}"
        )
    if args is not None and not isinstance(args, Mapping):
        raise CheckpointError(f"{where}: model_args is a {type(args).__name__}, not a mapping of arguments. {fix}")
    if tlc is not None and (isinstance(tlc, bool) or not isinstance(tlc, int) or tlc < 0):
        raise CheckpointError(f"{where}: tlc_train_size is {json.dumps(tlc)[:80]}, not a size in pixels. {fix}")
    config = record.get("config")
    if isinstance(config, str):  # tolerate a JSON string
        try:
            config = json.loads(config)
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{where}: config is a string but not JSON ({_first_line(exc)}). {fix}") from None
    if not config:
        return
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: config is a {type(config).__name__}, not a mapping of sections. {fix}")
    try:
        config_from_dict(config, source=f"{where}, its config")
    except ConfigError as exc:
        raise CheckpointError(f"{exc} {fix}") from None


def _read_torchscript(path: Path) -> dict[str, Any]:
    """The weights and architecture a nafrestore TorchScript export embeds, read without loading its code."""
    suffix = f"/extra/{TORCHSCRIPT_WEIGHTS_ENTRY}"
    try:
        with zipfile.ZipFile(path) as archive:
            entry = next((name for name in archive.namelist() if name.endswith(suffix)), None)
            data = archive.read(entry) if entry is not None else None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Cannot read TorchScript file {path}: {_first_line(exc)}. It may be truncated; export it again."
        ) from None
    if data is None:
        raise CheckpointError(
            f"{path} is a TorchScript file without the weights nafrestore embeds in its TorchScript exports (an "
            f"export from an older nafrestore, or another tool's file); its model cannot be read without running "
            f"its code. Re-export it (nafrestore export CHECKPOINT --format torchscript), or pass the checkpoint or "
            f".safetensors export it came from. To run it as it is, use torch.jit.load in Python."
        )
    try:
        tensors = load_safetensors(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"The weights embedded in {path} cannot be read: {_first_line(exc)}.") from None
    return _checkpoint_from(tensors, header.get("__metadata__") or {}, path)


def state_dict_from(obj: Mapping[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Find the weights inside a loaded file and strip wrapper prefixes.

    Args:
        obj: what :func:`read_checkpoint` returned.
        prefer_ema: take ``params_ema`` over ``params`` in BasicSR files when both exist (the EMA weights are
            the ones BasicSR validates), and a nafrestore ``last.pt``'s ``ema`` over its raw ``model`` weights
            (``best.pt``'s ``model`` already holds the weights its validation used).
    """
    if prefer_ema and isinstance(obj.get("ema"), Mapping) and obj.get("weights") != "ema":
        obj = {"model": obj["ema"]}  # a nafrestore last.pt: `model` holds the raw weights, `ema` the averaged ones
    for key in (("params_ema", "params") if prefer_ema else ("params", "params_ema")) + ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = strip_prefixes({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})
    if not state:
        raise CheckpointError("The file holds no tensors: it is not a model checkpoint or state dict.")
    return state


# ------------------------------------------------------------------------------------------------------------
# Building and loading


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with wrapper prefixes removed: ``module.`` (DataParallel/DDP), ``_orig_mod.`` (torch.compile),
    in any order and nesting."""
    out = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))) :]
        out[key] = value
    return out


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> nn.Module:
    """Load ``state`` into ``model`` strictly, with one readable message on any mismatch.

    Raises:
        CheckpointError: listing a few missing/unexpected/mis-shaped keys and the likely cause.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise CheckpointError(
            f"The weights in {source} do not fit the model: {'; '.join(parts)}. The file was most likely trained "
            f"with another architecture or preset (width, block counts); pick the matching config with --model, "
            f"e.g. configs/nafnet-sidd-width32.yaml for NAFNet-SIDD-width32.pth."
        )
    model.load_state_dict(state, strict=True)
    return model


def init_state(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights a training run starts from (``model.init_from``) and a description for messages.

    Args:
        source: a registry name (downloaded once), a checkpoint or weights file (a nafrestore checkpoint, an
            official release ``.pth``, a ``.safetensors`` export), or a run directory (its ``best.pt``).

    Raises:
        CheckpointError, DownloadError: as :func:`weights_file` and :func:`read_checkpoint`.
    """
    path = weights_file(source)
    entry = registry_name(source)
    where = f"model.init_from {source}" + (f" ({path})" if entry is not None or str(path) != str(source) else "")
    return state_dict_from(read_checkpoint(path)), where


#: The most values (parameters and buffers) nafrestore builds a network with: about 8 times the largest published
#: NAFNet (SIDD, width 64: 116 M). A file or config that asks for more is damaged or crafted (width 100000 would take
#: about 40 GB).
MAX_PARAMETERS = 1_000_000_000
#: The most blocks and levels of a network (every count of ``enc_blocks``, ``middle_blocks`` and ``dec_blocks``,
#: plus one per level, both networks of a pair together; NAFNet-GoPro and NAFNet-SIDD have 44): checked first,
#: because counting the parameters builds the network's skeleton module by module.
MAX_BLOCKS = 1000


def check_size(name: str, args: Mapping[str, Any]) -> int:
    """Refuse an architecture too large to build, before any of its memory is allocated; returns its size.

    The blocks are counted from the arguments; the parameters and buffers from the network's skeleton (built by
    :class:`_Skeleton`: shapes only, no memory), so every argument that sets a size counts: width, block counts,
    expansions, channels, a Gaussian's radius.

    Raises:
        NafrestoreError: more than :data:`MAX_BLOCKS` blocks and levels, or :data:`MAX_PARAMETERS` values, naming
            the count, the limit and the arguments; TypeError, ValueError, KeyError, RuntimeError: arguments the
            network does not take (or sizes that overflow), as its constructor raises them.
    """
    blocks = _block_count(args)
    if blocks > MAX_BLOCKS:
        raise NafrestoreError(
            f"Model {name!r} with {_shown_args(args)} has {blocks} blocks and levels (enc_blocks, middle_blocks, "
            f"dec_blocks and the levels together); nafrestore builds at most {MAX_BLOCKS} (NAFNet-GoPro has 44). The "
            f"file or config that gives this architecture is damaged or was made to exhaust memory: check its block "
            f"counts."
        )
    with _Skeleton():
        skeleton = create_model(name, **dict(args))
    count = sum(t.numel() for t in [*skeleton.parameters(), *skeleton.buffers()])
    if count > MAX_PARAMETERS:
        raise NafrestoreError(
            f"Model {name!r} with {_shown_args(args)} would hold {count / 1e6:,.0f} M parameters and buffers "
            f"({count * 4 / 2**30:,.1f} GiB as float32); nafrestore builds at most {MAX_PARAMETERS / 1e6:,.0f} M (the "
            f"largest published NAFNet has 116 M), so nothing was allocated. The file or config that gives this "
            f"architecture is damaged or was made to exhaust memory: check its width, block counts and filter sizes."
        )
    return count


class _Skeleton(TorchFunctionMode):
    """While active, modules are built as skeletons: the tensors that carry their size (parameters, buffers: made
    by ``empty``, ``zeros``, ``ones``, ``full``, ``rand``, ``randn``) on the meta device, shapes without memory.

    Why not ``with torch.device("meta")``: small computed constants (Gaussian taps, drop-path rates) would then be
    meta too, and meta ``arange`` goes through a Python decomposition whose first use imports torch._dynamo (1.3 s
    measured, on every command that loads a model); and ``linspace(...).tolist()`` fails on the meta device. So
    ranges are made on the CPU, unless longer than :data:`MAX_PARAMETERS` (a crafted Gaussian sigma of 1e9).
    """

    _SIZED = (torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn)
    _RANGES = (torch.arange, torch.linspace)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if kwargs.get("device") is None and (
            func in self._SIZED or (func in self._RANGES and _range_length(func, args, kwargs) > MAX_PARAMETERS)
        ):
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _range_length(func: Any, args: tuple, kwargs: dict[str, Any]) -> float:
    """How many values a call of ``torch.linspace`` or ``torch.arange`` asks for (0 when it cannot tell)."""
    try:
        if func is torch.linspace:
            return float(args[2] if len(args) > 2 else kwargs["steps"])
        given = dict(zip(("start", "end", "step"), (0, *args) if len(args) == 1 else args, strict=False))
        bounds = {"start": 0, "step": 1, **kwargs, **given}  # arange(end) or arange(start, end, step)
        return abs((float(bounds["end"]) - float(bounds["start"])) / float(bounds["step"]))
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError):
        return 0.0


def _block_count(args: Mapping[str, Any]) -> int:
    """The blocks and levels the ``*_blocks`` arguments ask for, in nested arguments too (a pair's networks)."""
    total = 0
    for key, value in args.items():
        if isinstance(value, Mapping):
            total += _block_count(value)
        elif str(key).endswith("blocks") and isinstance(value, list | tuple):
            total += len(value) + sum(v for v in value if isinstance(v, int) and v > 0)
        elif str(key).endswith("blocks") and isinstance(value, int) and value > 0:
            total += value
    return total


def _shown_args(args: Mapping[str, Any]) -> str:
    """The arguments for a message, 300 characters at most (a crafted file's can be long)."""
    text = str(dict(args))
    return text if len(text) <= 300 else text[:297] + "..."


def build_model(name: str, args: Mapping[str, Any], tlc_train_size: int | None = None) -> nn.Module:
    """The registered network ``name`` built with ``args``, with random weights, in training mode.

    Args:
        name: registered model name (``nafnet``, ``lka_nafnet``).
        args: the model's keyword arguments (width, block counts, ...).
        tlc_train_size: switch the test-time local converter on for this training patch size (None: off).

    Raises:
        NafrestoreError: an unknown name, arguments the model does not take, or an architecture too large to build
            (:func:`check_size`, checked before anything is allocated).
    """
    try:
        check_size(name, args)
        return create_model(name, tlc_train_size=tlc_train_size, **dict(args))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # RuntimeError: sizes that overflow
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else _first_line(exc)
        raise NafrestoreError(f"Model {name!r} cannot be built with {_shown_args(args)}: {reason}") from None


@dataclass
class ModelSpec:
    """Everything needed to rebuild a trained network: architecture, TLC setting, weights and where they came from.

    Attributes:
        model_name: registered model name (``nafnet``, ``lka_nafnet``).
        model_args: the model's keyword arguments.
        tlc_train_size: TLC training size when TLC is on by default, else None.
        config: the training config as a dict ({} when unknown).
        state: the (unfolded) state dict; None for an architecture without weights (``nafrestore info CONFIG``).
        source: a readable description of the files, for messages.
        tlc_size_hint: training patch size to use if TLC is switched on (``tlc=True``) while off by default.
    """

    model_name: str
    model_args: dict[str, Any]
    tlc_train_size: int | None
    config: dict[str, Any]
    state: dict[str, torch.Tensor] | None
    source: str
    tlc_size_hint: int = 256

    def build(self, tlc: bool | None = None) -> nn.Module:
        """The unfolded network with the weights loaded (random without weights), in eval mode on the CPU.

        Args:
            tlc: True/False switch TLC on/off; None keeps the spec's setting.
        """
        size = self.tlc_train_size
        if tlc is True:
            size = size or self.tlc_size_hint
        elif tlc is False:
            size = None
        try:
            model = build_model(self.model_name, self.model_args, size)
        except NafrestoreError as exc:
            raise CheckpointError(f"{exc} (architecture from {self.source})") from None
        if self.state is not None:
            load_weights(model, self.state, self.source)
        return model.eval()

    def metadata(self) -> dict[str, Any]:
        """What a safetensors export stores next to the weights (read back by :func:`read_checkpoint`)."""
        return {
            "format_version": METADATA_VERSION,
            "model_name": self.model_name,
            "model_args": self.model_args,
            "tlc_train_size": self.tlc_train_size,
            "config": self.config,
        }


def load_spec(source: str | Path, weights: str | Path | None = None, *, require_weights: bool = True) -> ModelSpec:
    """Resolve a checkpoint, run directory, safetensors export, or config/preset + weights to a :class:`ModelSpec`.

    Args:
        source: a registry name (``default``, ``nafnet-sidd-width32``, ... see :mod:`.pretrained`: its architecture
            and its weights, downloaded once), a nafrestore checkpoint, a run directory (its best checkpoint), a
            ``.safetensors`` export, or a YAML config / preset name that names the architecture. A registry name
            wins over a preset of the same name; an existing path wins over both.
        weights: with a config, preset or downloaded registry model: the weights (any checkpoint or state dict of
            that architecture, or a registry name) instead of the registry's.
        require_weights: a config without weights is an error (restoring with random weights only makes noise);
            False allows it and gives a spec without weights (for ``nafrestore info``; a downloaded registry model
            then gives its architecture without downloading the weights).

    Raises:
        CheckpointError: unreadable files, bare weights without an architecture, a config without weights, or
            weights that do not fit the architecture.
        DownloadError: a registry model that is not cached and cannot be downloaded (offline, no network, ...).
    """
    entry = registry_name(source)
    if entry is not None:
        return _spec_from_registry(entry, str(source), weights, require_weights)
    config_path = find_config(source)
    if config_path is not None:
        return _spec_from_config(config_path, weights, require_weights)
    if weights is not None:
        raise CheckpointError(
            f"weights= / --ckpt goes with a config or preset that names the architecture, but {source} is not a "
            f"YAML config or known preset. Give a nafrestore checkpoint alone, or a config plus the weights."
        )
    path = find_checkpoint(source, names=True)
    ckpt = read_checkpoint(path)
    if "model_name" not in ckpt:
        raise CheckpointError(
            f"{path} holds bare weights without the architecture (e.g. an official NAFNet release). Name the "
            f"architecture with --model, e.g. --model configs/nafnet-sidd-width32.yaml --ckpt {path} "
            f"(Python: load_model('configs/nafnet-sidd-width32.yaml', weights={str(path)!r}))."
        )
    check_recorded(ckpt, str(path))
    config = ckpt.get("config") or {}
    if isinstance(config, str):  # tolerate a JSON string (check_recorded parsed it once)
        config = json.loads(config)
    tlc_size = ckpt.get("tlc_train_size")
    return ModelSpec(
        model_name=str(ckpt["model_name"]),
        model_args=dict(ckpt.get("model_args") or {}),
        tlc_train_size=int(tlc_size) if tlc_size else None,
        config=dict(config),
        state=state_dict_from(ckpt),
        source=str(path),
        tlc_size_hint=int(tlc_size) if tlc_size else _config_tlc_size(config),
    )


def pair_spec(config: str | Path, mild: str | Path, strong: str | Path, *, refilter: bool = False) -> ModelSpec:
    """A noise-gated pair (``model.name: noise_gated_pair``) from its config and its two networks' weights.

    Args:
        config: the pair's YAML config: its ``model`` section gives both networks' architectures and the gate,
            and the whole config is stored with the weights (what ``eval --model`` reads).
        mild, strong: each network's trained weights, anything :func:`load_spec` takes (a registry name, a run
            directory, a checkpoint, a safetensors export) whose recorded architecture matches the config's; a
            noise-gated pair gives its network of the same role (so a new pair can keep one of an old pair's).
        refilter: let the config's residual filter (``RESIDUAL_FILTER_ARGS``, settings without parameters) differ
            from the one a network was trained with, e.g. a narrower ``residual_highpass`` for the same weights.
            Off, such a difference is refused like any other.

    Raises:
        CheckpointError: the config is not a pair's, or a network's weights are of another architecture.
    """
    config_path = Path(config)
    cfg = load_config(config_path)
    if cfg.model.name != "noise_gated_pair":
        raise CheckpointError(f"{config_path} describes a {cfg.model.name}, not a noise_gated_pair.")
    args = dict(cfg.model.args)
    kind = str(args.get("model", "lka_nafnet"))
    states = []
    for role, source in (("mild", mild), ("strong", strong)):
        spec = load_spec(source)
        if spec.model_name == "noise_gated_pair":
            spec = _pair_member(spec, role)
        recorded = {"model_name": spec.model_name, "model_args": spec.model_args}
        _check_same_architecture(recorded, kind, args.get(role, {}), Path(spec.source), config_path,
                                 ignore=RESIDUAL_FILTER_ARGS if refilter else ())  # fmt: skip
        assert spec.state is not None  # load_spec requires weights
        states.append(spec.state)
    spec = ModelSpec(
        model_name=cfg.model.name,
        model_args=args,
        tlc_train_size=None,
        config=config_to_dict(cfg),
        state=pair_state(*states),
        source=f"{config_path} (mild: {mild}, strong: {strong})",
    )
    spec.build()  # fail here when the weights do not fit
    return spec


def _pair_member(pair: ModelSpec, role: str) -> ModelSpec:
    """The ``role`` ("mild" or "strong") network of a noise-gated pair's spec, as a spec of its own."""
    assert pair.state is not None  # load_spec requires weights
    prefix = f"{role}."
    return ModelSpec(
        model_name=str(pair.model_args.get("model", "lka_nafnet")),
        model_args=dict(pair.model_args.get(role, {})),
        tlc_train_size=None,
        config={},
        state={k[len(prefix) :]: v for k, v in pair.state.items() if k.startswith(prefix)},
        source=f"{pair.source} ({role} network)",
    )


def _spec_from_config(config_path: Path, weights: str | Path | None, require_weights: bool) -> ModelSpec:
    if weights is None and require_weights:
        raise CheckpointError(
            f"{config_path} is a config: it describes the architecture but holds no trained weights, and restoring "
            f"with random weights would only produce noise. Add the weights, e.g. --model {config_path} "
            f"--ckpt NAFNet-SIDD-width32.pth (Python: load_model({str(config_path)!r}, weights=...))."
        )
    cfg = load_config(config_path)
    state, source = None, str(config_path)
    if weights is not None:
        weights_path = weights_file(weights)
        ckpt = read_checkpoint(weights_path)
        _check_same_architecture(ckpt, cfg.model.name, cfg.model.args, weights_path, config_path)
        state = state_dict_from(ckpt)
        source = f"{weights_path} (architecture from {config_path})"
    return ModelSpec(
        model_name=cfg.model.name,
        model_args=dict(cfg.model.args),
        tlc_train_size=cfg.model.tlc_train_size if cfg.model.tlc else None,
        config=config_to_dict(cfg),
        state=state,
        source=source,
        tlc_size_hint=cfg.model.tlc_train_size,
    )


def _check_same_architecture(
    ckpt: Mapping[str, Any],
    name: str,
    args: Mapping[str, Any],
    weights_path: Path,
    config_path: Path,
    ignore: Collection[str] = (),
) -> None:
    """Refuse weights whose own recorded architecture differs from the config's (apart from the ``ignore`` args).

    Settings without parameters (``residual_highpass``, ``kernel_size`` of equal shapes, ...) would otherwise load
    into the wrong network without a key or shape error and give silently wrong outputs. An argument given as None
    counts as its default (``kernel_size: null`` is 23). Files that record no architecture (official release files,
    bare state dicts) are taken as the config says.
    """
    their_name, their_args = ckpt.get("model_name"), ckpt.get("model_args")
    if not isinstance(their_name, str) or not isinstance(their_args, Mapping) or their_name not in MODELS:
        return

    def full(model: str, given: Mapping[str, Any]) -> dict[str, Any]:
        params = inspect.signature(MODELS.get(model)).parameters.values()
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        merged = {k: defaults.get(k) if v is None else v for k, v in {**defaults, **given}.items()}  # None: default
        return {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}

    mine, theirs = full(name, args), full(their_name, their_args)
    differ = [f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in sorted(set(mine) | set(theirs))
              if mine.get(k) != theirs.get(k) and k not in ignore]  # fmt: skip
    if name != their_name or differ:
        detail = f"model {their_name} there, {name} here" if name != their_name else "; ".join(differ)
        raise CheckpointError(
            f"{weights_path} was trained as a different architecture than {config_path} describes ({detail}). "
            f"Give the checkpoint alone (it carries its architecture), or correct the config's model section."
        )


def _spec_from_registry(
    entry: PretrainedModel, name: str, weights: str | Path | None, require_weights: bool
) -> ModelSpec:
    """A registry model: a shipped file (architecture inside), or a preset plus the downloaded weights."""
    if entry.preset is None:
        if weights is not None:
            raise CheckpointError(
                f"{name} is a complete model ({entry.name}: architecture and weights); give other weights with the "
                f"config of their architecture instead, e.g. --model configs/lka-nafnet-w12.yaml --ckpt WEIGHTS."
            )
        spec = load_spec(pretrained_file(name))  # type: ignore[arg-type]
        spec.source = f"{entry.name} ({spec.source})"
        return spec
    config_path = preset_config(entry)
    own = weights is None and require_weights
    if own:
        weights = pretrained_file(entry.name)
    spec = _spec_from_config(config_path, weights, require_weights)
    if own:
        spec.source = f"{entry.name} ({spec.source})"
    return spec


def _config_tlc_size(config: Mapping[str, Any]) -> int:
    model = config.get("model", {}) if isinstance(config, Mapping) else {}
    size = model.get("tlc_train_size") if isinstance(model, Mapping) else None
    return int(size) if isinstance(size, int) and size > 0 else 256


def resolve_source(
    checkpoint: str | Path | None = None, model: str | Path | None = None
) -> tuple[str | Path, str | Path | None]:
    """The command-line convention -> :func:`load_spec` arguments: ``--ckpt C`` alone, ``--model CONFIG --ckpt W``,
    or neither: the ``default`` model that ships with the package.

    A registry name works in either place: ``--ckpt NAME`` or ``--model NAME`` alone is that model (architecture
    and weights); ``--model NAME --ckpt W`` is its architecture with the weights ``W``; ``--model CONFIG --ckpt
    NAME`` the config's architecture with the registry model's weights.

    Raises:
        NafrestoreError: ``--model`` with a config but no ``--ckpt``.
    """
    if model is not None:
        if checkpoint is None and registry_name(model) is None and find_config(model) is not None:
            raise CheckpointError(
                f"--model {model} names an architecture but no trained weights: add --ckpt WEIGHTS (e.g. an "
                f"official NAFNet release .pth or a nafrestore checkpoint), or name a pretrained model instead "
                f"(`nafrestore models` lists them). Random weights would only produce noise."
            )
        return model, checkpoint
    if checkpoint is None:
        return DEFAULT, None
    return checkpoint, None
