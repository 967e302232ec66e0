"""Weights of the official HPCM release (``lyq133/LIC-HPCM``) for lictrain's HPCM.

The official HPCM-Base/Large checkpoints hold the same parameters as our ``hpcm-base`` /
``hpcm-large`` under other names and in a few other arrangements:

* ``g_a.branch.N`` (and ``g_s``, ``h_a``, ``h_s``) -> ``g_a.N``; inside a block
  ``branch.0.pconv`` -> ``body.0.conv`` and ``branch.K`` -> ``body.K``;
* ``y_spatial_prior_s1_s2`` / ``_s3``: ``branch_1`` -> ``head``, ``branch_2`` -> ``tail``
  (s1 and s2 share one prior: ours appears twice in a ``state_dict``, as ``priors.0``/``.1``);
* ``attn_sL``: ``conv_q`` -> ``q``, ``conv_out`` -> ``skip``, ``conv_k``/``conv_v`` fused in
  our ``kv`` (keys first);
* per-scale adaptor lists, which the official loop indexes with ``[i - 1]`` (a rotation:
  the first s2 step uses the last s2 adaptor, the first s3 step the last s3 one), -> one
  adaptor per global step;
* ``adaptive_params_list.T`` -> ``context.gains[T]`` (stacked); the released checkpoints
  predate that ``ParameterList`` (the gains were a plain list, all ones, never saved): when
  no gain is present, the gains are 1, exactly what the released models computed with;
* ``context_net.I`` -> ``context.scale_fusion.I``; ``means_hyper``/``scales_hyper`` ->
  ``z_prior.means``/``z_prior.scales``;
* the official entropy buffers (``scale_table``, CDF tables, GG shape and bounds) are not
  weights: lictrain rebuilds its tables with ``model.update(force=True)``.

The converted weights run in ``hpcm-base-official``/``hpcm-large-official``, which place
the hyperprior's parameters at the s1 -> s2 transition as the official code does (see
``docs/hpcm.md``); their eval forward matches the official one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import torch

from lictrain.errors import CheckpointError
from lictrain.models.hpcm.context import FIRST_STEP, NUM_STEPS, STEPS_PER_SCALE
from lictrain.models.hpcm.entropy import BETA, LIKELIHOOD_BOUND, SCALE_BOUND
from lictrain.models.hpcm.model import BASE, HPCM, LARGE, HPCMConfig

BASE_NAME = "hpcm-base-official"
LARGE_NAME = "hpcm-large-official"
_CONFIGS: dict[str, HPCMConfig] = {BASE_NAME: BASE, LARGE_NAME: LARGE}
_LABELS = {BASE_NAME: "HPCM-Base", LARGE_NAME: "HPCM-Large"}
#: the lictrain architecture each official variant is (same parameters, official s2 placement)
_PLAIN = {"hpcm-base": BASE_NAME, "hpcm-large": LARGE_NAME}

# Buffers of the official model: not weights (shapes vary once its update() has run).
_OFFICIAL_BUFFERS = frozenset({
    "scale_table", "quantized_cdf_z", "cdf_length_z", "offset_z", "quantized_cdf_y", "cdf_length_y", "offset_y",
    "entropy_estimation.beta", "entropy_estimation.scale_lower_bound.bound",
    "entropy_estimation.likelihood_lower_bound.bound",
})
# The constants those scalar buffers must hold for our entropy model to match.
_OFFICIAL_CONSTANTS = {
    "entropy_estimation.beta": BETA,
    "entropy_estimation.scale_lower_bound.bound": SCALE_BOUND,
    "entropy_estimation.likelihood_lower_bound.bound": LIKELIHOOD_BOUND,
}
_GAINS = "adaptive_params_list."
_PREFIX = "module."  # nn.DataParallel / DistributedDataParallel wrappers

# (our name pattern, official template) for tensors copied as they are.
_RENAMES = [
    (r"(g_a|g_s|h_a|h_s)\.(\d+)\.body\.0\.conv\.(weight|bias)", r"\1.branch.\2.branch.0.pconv.\3"),
    (r"(g_a|g_s|h_a|h_s)\.(\d+)\.body\.(\d+)\.(weight|bias)", r"\1.branch.\2.branch.\3.\4"),
    (r"(g_a|g_s|h_a|h_s)\.(\d+)\.(weight|bias)", r"\1.branch.\2.\3"),
    # s1 and s2 share one prior (ours appears as priors.0 and priors.1); s3 has its own.
    (r"context\.priors\.[01]\.head\.(\d+)\.body\.(\d+)\.(\w+)", r"y_spatial_prior_s1_s2.branch_1.\1.branch.\2.\3"),
    (r"context\.priors\.[01]\.tail\.(\d+)\.body\.(\d+)\.(\w+)", r"y_spatial_prior_s1_s2.branch_2.\1.branch.\2.\3"),
    (r"context\.priors\.[01]\.tail\.(\d+)\.(weight|bias)", r"y_spatial_prior_s1_s2.branch_2.\1.\2"),
    (r"context\.priors\.2\.head\.(\d+)\.body\.(\d+)\.(\w+)", r"y_spatial_prior_s3.branch_1.\1.branch.\2.\3"),
    (r"context\.priors\.2\.tail\.(\d+)\.body\.(\d+)\.(\w+)", r"y_spatial_prior_s3.branch_2.\1.branch.\2.\3"),
    (r"context\.priors\.2\.tail\.(\d+)\.(weight|bias)", r"y_spatial_prior_s3.branch_2.\1.\2"),
    (r"context\.scale_fusion\.(\d+)\.(weight|bias)", r"context_net.\1.\2"),
    (r"z_prior\.means", "means_hyper"),
    (r"z_prior\.scales", "scales_hyper"),
]
_ATTENTION = re.compile(r"context\.attention\.(\d+)\.(q|kv|skip)\.(weight|bias)")
_ADAPTOR = re.compile(r"context\.adaptors\.(\d+)\.(weight|bias)")
_OURS_ONLY = re.compile(r".*lower_bound_(scale|likelihood)\.bound")  # our constant buffers


def _adaptor_name(index: int) -> str:
    """Official name of our adaptor ``index`` (global step ``index + 1``).

    The official loop over a scale's steps ``i = 0, 1, ...`` (s1: ``i = 1`` only) uses
    ``list[i - 1]`` of that scale's list, Python's negative index wrapping around.
    """
    step = index + 1
    level = max(lv for lv in range(3) if FIRST_STEP[lv] <= step)
    length = STEPS_PER_SCALE[level] - (1 if level == 0 else 0)  # step 0 has no adaptor
    return f"y_spatial_prior_adaptor_list_s{level + 1}.{(step - FIRST_STEP[level] - 1) % length}"


def _sources(ours: str) -> list[str] | None:
    """Official tensor names that make up our tensor ``ours`` (concatenated on dim 0), or None."""
    for pattern, template in _RENAMES:
        if re.fullmatch(pattern, ours):
            return [re.sub(pattern, template, ours)]
    if m := _ATTENTION.fullmatch(ours):
        cell = f"attn_s{int(m[1]) + 1}"
        convs = {"q": ["conv_q"], "kv": ["conv_k", "conv_v"], "skip": ["conv_out"]}[m[2]]
        return [f"{cell}.{conv}.{m[3]}" for conv in convs]
    if m := _ADAPTOR.fullmatch(ours):
        return [f"{_adaptor_name(int(m[1]))}.{m[2]}"]
    if ours == "context.gains":
        return [f"{_GAINS}{t}" for t in range(NUM_STEPS - 1)]
    return None


@functools.cache
def _our_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Our ``state_dict`` shapes of ``name`` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = HPCM(_CONFIGS[name], s2_placement="official")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@functools.cache
def official_manifest(name: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official parameters behind model ``name`` (buffers excluded).

    Derived from our architecture and the name mapping; ``tests/fixtures`` holds the
    official code's own list, against which the tests check it.
    """
    manifest: dict[str, tuple[int, ...]] = {}
    for ours, shape in _our_shapes(name).items():
        sources = _sources(ours)
        if sources is None:
            if not _OURS_ONLY.fullmatch(ours):
                raise AssertionError(f"no official counterpart for {ours}")
            continue
        if ours == "context.gains":
            each = shape[1:]  # (1, 3M, 1, 1) per step
        else:
            each = (shape[0] // len(sources), *shape[1:])
        for src in sources:
            manifest[src] = each
    return manifest


def official_variant(name: str) -> str | None:
    """The model that runs official weights of architecture ``name``: ``hpcm-base`` ->
    ``hpcm-base-official``, ``hpcm-large`` -> ``hpcm-large-official``; None for any other name."""
    return _PLAIN.get(name)


def _strip(key: object) -> object:
    return key[len(_PREFIX):] if isinstance(key, str) and key.startswith(_PREFIX) else key


def _shape(value: object) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    try:
        return tuple(int(d) for d in shape) if shape is not None else None
    except (TypeError, ValueError):
        return None


def _classify(state: object) -> tuple[str | None, str]:
    """``(model name, "")`` for an official HPCM-Base/Large state dict, else ``(None, reason)``."""
    if not isinstance(state, Mapping) or not state:
        return None, "not a non-empty mapping of tensors"
    keys = {_strip(k) for k in state}
    if not all(isinstance(k, str) for k in keys):
        return None, "it has non-string keys"
    # Both prefixes together exist only in HPCM (the official Phi-context variant has no attention).
    # Checked first: the manifests below build both architectures (seconds), which every CompressAI
    # checkpoint read by eval/compress would otherwise pay.
    if not any(k.startswith("attn_s") for k in keys) or not any(k.startswith("y_spatial_prior_") for k in keys):
        return None, "it lacks HPCM's attention or spatial-prior tensors"
    base, large = set(official_manifest(BASE_NAME)), set(official_manifest(LARGE_NAME))
    foreign = sorted(keys - base - large - _OFFICIAL_BUFFERS)
    if foreign:
        return None, f"{len(foreign)} names are not HPCM-Base/Large's (e.g. {foreign[0]!r})"
    base_only, large_only = keys & (base - large), keys & (large - base)
    if base_only and large_only:
        return None, f"it mixes Base ({min(base_only)!r}) and Large ({min(large_only)!r}) layers"
    name = LARGE_NAME if large_only else BASE_NAME
    # The channel widths (M = 320, N = 256) are shared by Base and Large; other widths mean
    # another architecture with the same names.
    stripped = {_strip(k): v for k, v in state.items()}
    for anchor in ("means_hyper", "attn_s1.conv_q.weight"):
        if anchor in stripped and _shape(stripped[anchor]) != official_manifest(name)[anchor]:
            return None, f"{anchor} has shape {_shape(stripped[anchor])}, not HPCM-Base/Large's widths"
    return name, ""


def detect_official_hpcm(state: Mapping[str, torch.Tensor]) -> str | None:
    """The lictrain model name of an official HPCM state dict, or None.

    Decides by names (every name must be an official HPCM-Base/Large parameter or buffer,
    attention and spatial priors present, Large-only layers pick Large) and by the widths
    of two anchor tensors. A leading ``module.`` is ignored. Never raises.

    Args:
        state: a state dict (any mapping).

    Returns:
        ``"hpcm-base-official"``, ``"hpcm-large-official"`` or None.
    """
    try:
        return _classify(state)[0]
    except Exception:  # noqa: BLE001 - a detector must never fail on foreign input
        return None


def convert_official_hpcm(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Convert an official HPCM-Base/Large state dict to lictrain's names and layout.

    Args:
        state: the official ``state_dict`` (with or without a ``module.`` prefix; the
            released Large/Base checkpoints without ``adaptive_params_list.*`` get gains 1).

    Returns:
        ``(model name, state dict)``; the state dict loads with ``strict=True`` into
        ``build_model(model_name, 1)``.

    Raises:
        CheckpointError: not an official HPCM-Base/Large state dict, or tensors missing,
            mis-shaped or holding entropy constants our model does not use.
    """
    name, reason = _classify(state)
    if name is None:
        raise CheckpointError(f"not an official HPCM-Base/Large state dict: {reason}; "
                              "pass a checkpoint of lyq133/LIC-HPCM's HPCM_Base or HPCM_Large")
    label = _LABELS[name]
    official = {_strip(k): v for k, v in state.items()}
    manifest = official_manifest(name)
    gains_absent = not any(k.startswith(_GAINS) for k in official)
    missing = [k for k in manifest if k not in official and not (gains_absent and k.startswith(_GAINS))]
    wrong = [k for k in manifest if k in official
             and (not isinstance(official[k], torch.Tensor) or _shape(official[k]) != manifest[k])]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {_shape(official[k])}, expected {manifest[k]})")
        raise CheckpointError(f"official {label} checkpoint is incomplete or damaged: {'; '.join(parts)}; "
                              "re-download it, or pass the complete state_dict of the official model")
    for key, expected in _OFFICIAL_CONSTANTS.items():
        value = official.get(key)
        if (isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_meta
                and abs(float(value) - expected) > 1e-6 * expected):
            raise CheckpointError(f"official {label} checkpoint has {key} = {float(value):g}, but HPCM uses "
                                  f"{expected:g}; convert a checkpoint of the unmodified official model")

    converted: dict[str, torch.Tensor] = {}
    for ours, shape in _our_shapes(name).items():
        sources = _sources(ours)
        if sources is None:  # our constant lower-bound buffers
            converted[ours] = torch.tensor([SCALE_BOUND if "scale" in ours.rsplit(".", 2)[-2] else LIKELIHOOD_BOUND])
        elif ours == "context.gains":
            converted[ours] = (torch.ones(shape) if gains_absent
                               else torch.stack([official[k].detach() for k in sources]))
        elif len(sources) == 1:
            converted[ours] = official[sources[0]].detach()
        else:
            converted[ours] = torch.cat([official[k].detach() for k in sources])
    return name, converted
