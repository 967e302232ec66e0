"""A checkpoint as a codec: build its model, load and vet its weights, ``update()`` it, describe it.

:func:`load_codec` reads any weights file lictrain knows (checkpoint, run directory, bare
state dict, safetensors) and returns the model with a :class:`CodecInfo`; :func:`codec_from_model`
describes a model already in memory. :func:`weights_fingerprint` identifies the weights in
every ``.lic`` file they write.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lictrain.checkpoint.weights import read_weights
from lictrain.device import resolve_device
from lictrain.errors import CheckpointError, ConfigError
from lictrain.evaluation.bitstream_format import FINGERPRINT_BYTES, storable_name
from lictrain.models import build_model, get_spec
from lictrain.models.gains import lambdas_in_state, make_variable_rate
from lictrain.models.hpcm.official import official_variant

__all__ = ["CodecInfo", "weights_fingerprint", "load_codec", "codec_from_model", "MAX_ENTROPY_RANGE",
           "MAX_PROBE_LATENT"]

log = logging.getLogger(__name__)

#: state-dict entries derived by ``update()`` from the weights (not part of the fingerprint)
_DERIVED_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


@dataclass(frozen=True)
class CodecInfo:
    """What a loaded codec is.

    Attributes:
        model: registry name.
        quality: ``--quality``.
        fingerprint: 8 bytes of sha256 over the weights (:func:`weights_fingerprint`).
        alignment: the input multiple the model needs (from the registry).
        source: the file the weights came from.
        epoch: the checkpoint's epoch, when known.
        lmbda: the training λ, when known.
        device: where the model runs.
        pad: how images are padded to the model's input multiple (:data:`PAD_MODES`).
        checkpoint: the weights file's name, recorded in the ``.lic`` files it writes (None: in memory).
        run: the name of that file's run directory (lictrain checkpoints), else None.
    """

    model: str
    quality: int
    fingerprint: bytes
    alignment: int
    source: str
    epoch: int | None = None
    lmbda: float | None = None
    device: str = "cpu"
    pad: str = "replicate"  # see PAD_MODES
    checkpoint: str | None = None
    run: str | None = None

    @property
    def label(self) -> str:
        """A short name for tables: ``model q<quality>[ λ=...][ ep<epoch>]``."""
        parts = [f"{self.model} q{self.quality}"]
        if self.lmbda is not None:
            parts.append(f"λ={self.lmbda:g}")
        if self.epoch is not None:
            parts.append(f"ep{self.epoch}")
        return " ".join(parts)


def weights_fingerprint(model: torch.nn.Module) -> bytes:
    """First 8 bytes of sha256 over the state dict in sorted key order (name, dtype, shape, bytes).

    The entropy coder's CDF tables are left out: ``update()`` derives them from the weights.
    """
    h = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        if key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[: FINGERPRINT_BYTES]


def load_codec(
    checkpoint_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    model: str | None = None,
    quality: int | None = None,
) -> tuple[torch.nn.Module, CodecInfo]:
    """Build the model a checkpoint was trained as, load its weights, ``update()`` it, move it to ``device``.

    Args:
        checkpoint_path: a lictrain checkpoint, a run directory (its latest checkpoint), a
            bare ``state_dict`` file, or a ``.safetensors`` file from ``lictrain export``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a :class:`torch.device`.
        model, quality: the architecture, required for files that do not record it
            (safetensors, bare state dicts); for a checkpoint they must agree with its config.

    Returns:
        ``(model, info)``: the model in eval mode with its CDF tables built, and a :class:`CodecInfo`.

    Raises:
        CheckpointError: missing, corrupt or unsafe file, or weights that do not fit the model.
        ConfigError: model/quality missing or contradicting the checkpoint; unknown model; bad device.
    """
    path = Path(checkpoint_path).expanduser()
    dev = resolve_device(device)
    state, ckpt, path = read_weights(path)
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    name, q = config.get("model"), config.get("quality")
    if name is None or q is None:
        if model is None or quality is None:
            what = "a safetensors file" if path.suffix == ".safetensors" else "this file"
            raise ConfigError(
                f"{path} does not record its architecture ({what} holds weights only); "
                "pass --model NAME --quality Q (see lictrain models)"
            )
        name, q = model, quality
    else:
        if model is not None and model != name:
            _accept_recorded_model(path, str(name), model)
        if quality is not None and int(quality) != int(q):
            raise ConfigError(f"--quality {quality} contradicts {path}, which was trained at quality {q}; drop --quality")
    q = int(q)
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:  # NaN weights make the entropy coder's tables (and its loops) meaningless: refuse up front
        raise CheckpointError(f"the weights in {path} hold NaN or infinite values ({bad[0]}, {len(bad)} tensor(s)): "
                              "the run diverged; evaluate an earlier checkpoint or retrain with a lower --lr")
    spec = get_spec(str(name))
    net = build_model(spec.name, q)
    trained_rates = lambdas_in_state(state)
    try:
        if trained_rates is not None:  # a variable-rate model: its gains join before its weights load
            make_variable_rate(net, trained_rates)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, ConfigError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(
            f"the weights in {path} do not fit {spec.name} quality {q} ({detail}); "
            "pass the --model/--quality they were trained with"
        ) from exc
    net.eval()
    _check_entropy_ranges(net, path)
    net.update(force=True)  # CDF tables built on the CPU: the same tables on every device
    fingerprint = weights_fingerprint(net)
    net.to(dev)
    epoch = ckpt.get("epoch")
    lmbda = config.get("lmbda")
    run = path.resolve().parent.name if "model_state" in ckpt else None  # a lictrain checkpoint lives in its run
    info = CodecInfo(
        model=spec.name, quality=q, fingerprint=fingerprint, alignment=spec.alignment,
        source=str(path),
        epoch=int(epoch) if isinstance(epoch, int) else None,
        lmbda=float(lmbda) if isinstance(lmbda, (int, float)) else None, device=str(dev),
        checkpoint=storable_name(path.name), run=storable_name(run),
    )
    return net, info


def _accept_recorded_model(path: Path, recorded: str, requested: str) -> None:
    """Allow ``--model hpcm-base`` for weights recorded as its official variant (one log line says
    so: the variant is the same architecture with the official code's s2 placement, the only one
    those weights run correctly in); any other difference is a ConfigError."""
    if official_variant(requested) != recorded:
        raise ConfigError(f"--model {requested} contradicts {path}, which was trained as {recorded}; drop --model")
    log.info("%s holds official HPCM weights: using %s (%s with the official code's s2 placement)",
             path, recorded, requested)


#: widest value range (in quantisation bins) a factorized entropy model may span; CompressAI's
#: ``update()`` builds a CDF table that long per channel, so a diverged model's 1e20 would hang it
MAX_ENTROPY_RANGE = 1 << 16


#: largest latent magnitude a sane codec produces for a grey probe image; CompressAI's rANS
#: encoder loops without end on symbols near the int32 limits
MAX_PROBE_LATENT = 1e6


def _check_entropy_ranges(net: torch.nn.Module, path: Path) -> None:
    """Refuse weights of a diverged run: EntropyBottleneck quantiles over an absurd range, or an
    analysis transform whose latent for a plain grey image is not finite or enormous (either
    would hang CompressAI's table building or rANS encoder)."""
    g_a = getattr(net, "g_a", None)
    if isinstance(g_a, torch.nn.Module):
        with torch.inference_mode():
            latent = g_a(torch.full((1, 3, 64, 64), 0.5))
        peak = latent.abs().max()
        if not bool(torch.isfinite(peak)) or float(peak) > MAX_PROBE_LATENT:
            raise CheckpointError(f"the weights in {path} give latents of {float(peak):.3g} for a grey image: the run "
                                  "diverged; evaluate an earlier checkpoint or retrain with a lower --lr")
    for name, module in net.named_modules():
        quantiles = getattr(module, "quantiles", None)
        if not isinstance(quantiles, torch.Tensor) or quantiles.dim() != 3 or quantiles.shape[-1] != 3:
            continue
        span = (quantiles[..., 2] - quantiles[..., 0]).detach().abs().max()
        if not bool(torch.isfinite(span)) or float(span) > MAX_ENTROPY_RANGE:
            raise CheckpointError(f"the entropy model {name} in {path} spans {float(span):.3g} quantisation bins: the "
                                  "run diverged; evaluate an earlier checkpoint or retrain with a lower --lr")


def codec_from_model(model: torch.nn.Module, name: str, quality: int, *, source: str = "<in memory>") -> CodecInfo:
    """``update()`` an in-memory model and describe it (for tests, benchmarks and the trainer)."""
    spec = get_spec(name)
    model.eval()
    device = next(model.parameters()).device
    model.to("cpu").update(force=True)
    fingerprint = weights_fingerprint(model)
    model.to(device)
    return CodecInfo(name, int(quality), fingerprint, spec.alignment, source, device=str(device))
