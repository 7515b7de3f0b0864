"""Multi-distribution (MD) region mask: a feature-generated gate on the region-driven dimensions.

The MD part of SEQ+MD (S. Wang, A. Z. Chen, A. Clapp, S.-M. Shih, X. Zhao, "SEQ+MD: Learning
Multi-Task as a SEQuence with Multi-Distribution Data", 2023) splits the input features into
region-invariant and region-driven parts and multiplies the region-driven part by a mask that a
small network generates from region features. The paper works on tabular ranking features; here the
input is the encoder's pooled vector, so "features" are hidden dimensions. What follows the paper:
the split, the feature-generated sigmoid mask, and its multiplication of the region-driven part.
Our interpretation: which dimensions are invariant (the first ``round(invariant_fraction * H)``;
they are just a convention the encoder learns to fill), the gate's input (a learned region
embedding, optionally concatenated with region feature columns), its size, and the scale
(``scale * sigmoid``; with the default 2 a mask of 1 is the identity and the gate can both damp and
amplify, as in PEPNet's Gate NU, Chang et al., KDD 2023).

Region feature columns (``data.region_feature_columns``, e.g. a price or a currency/price-level
index joined per row) are standardised *inside* the mask with the training split's mean and std,
held as buffers and as constructor arguments (so in the module's hparams and its checkpoint): a
checkpoint evaluated on other data keeps its training statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from data_modules.errors import ConfigError
from ranking.nn.towers._checks import (
    check_options,
    check_region_ids,
    non_negative_int,
    positive_int,
)


class FeatureRegionMask(nn.Module):
    """Feature-generated region mask (the "MD" of SEQ+MD, our interpretation; see module docs).

    With ``h = [h_inv, h_reg]`` split at ``D_inv = round(invariant_fraction * H)`` (Python's
    ``round``, half to even)::

        x     = (region_features - feature_mean) / feature_std      # [N, F], std 0 -> 1
        z     = [E[region], x]                                      # [N, E + F]
        m     = scale * sigmoid(W2 relu(W1 z + b1) + b2)            # [N, H - D_inv], in [0, scale]
        h'    = [h_inv, m * h_reg]                                  # [N, H]

    ``h'`` has the width of ``h``, so the mask plugs in front of any tower unchanged. With
    ``invariant_fraction=0`` the whole hidden state is region-driven (the mask gates all of it).

    Args:
        hidden_size: H, width of the input representation.
        num_regions: Number of region ids; ids must lie in ``[0, num_regions)``.
        region_feature_dim: F, number of region feature columns passed to :meth:`forward`
            (0: the gate sees the region embedding only).
        region_embedding_dim: E, width of the learned region embedding (0: none, then F >= 1).
        invariant_fraction: Share of the H dimensions passed through unchanged, in ``[0, 1)``.
        scale: Upper bound of the mask (> 0).
        gate_hidden: Width of the gate's hidden layer (0: a single linear layer).
        feature_columns: Names of the F feature columns, in order (for error messages and the
            checkpoint's record; ``()``: unnamed).
        feature_mean: ``[F]`` mean of each feature on the training split (``None``: 0).
        feature_std: ``[F]`` standard deviation of each feature on the training split
            (``None``: 1; a std of 0, a constant column, is replaced by 1).

    Raises:
        ConfigError: (a ``ValueError``) on an invalid size, fraction or scale.

    Example:
        >>> mask = FeatureRegionMask(hidden_size=8, num_regions=3)
        >>> h2, m = mask(torch.randn(4, 8), torch.tensor([0, 1, 2, 1]))
        >>> tuple(h2.shape), tuple(m.shape)
        ((4, 8), (4, 4))
    """

    def __init__(
        self,
        hidden_size: int,
        num_regions: int,
        region_feature_dim: int = 0,
        region_embedding_dim: int = 16,
        invariant_fraction: float = 0.5,
        scale: float = 2.0,
        gate_hidden: int = 32,
        feature_columns: Sequence[str] = (),
        feature_mean: Sequence[float] | None = None,
        feature_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_regions = positive_int(num_regions, "num_regions")
        if not 0.0 <= float(invariant_fraction) < 1.0:
            raise ConfigError(
                f"invariant_fraction must be in [0, 1), got {invariant_fraction!r} "
                "(1 would leave no region-driven dimension to mask)"
            )
        if not float(scale) > 0.0:
            raise ConfigError(f"scale must be > 0, got {scale!r}")
        region_feature_dim = non_negative_int(region_feature_dim, "region_feature_dim")
        region_embedding_dim = non_negative_int(region_embedding_dim, "region_embedding_dim")
        gate_hidden = non_negative_int(gate_hidden, "gate_hidden")
        if region_embedding_dim == 0 and region_feature_dim == 0:
            raise ConfigError("the gate needs an input: region_embedding_dim or region_feature_dim")
        self.invariant_dim = round(float(invariant_fraction) * self.hidden_size)
        self.driven_dim = self.hidden_size - self.invariant_dim
        if self.driven_dim < 1:
            raise ConfigError(
                f"invariant_fraction={invariant_fraction} leaves no region-driven dimension "
                f"of hidden_size={hidden_size}"
            )
        self.region_feature_dim = region_feature_dim
        self.feature_columns = _feature_columns(feature_columns, region_feature_dim)
        mean = _feature_stat(feature_mean, "feature_mean", region_feature_dim, 0.0)
        std = _feature_stat(feature_std, "feature_std", region_feature_dim, 1.0)
        if (std < 0).any():
            raise ConfigError(f"region_mask.feature_std must be >= 0, got {std.tolist()}")
        if region_feature_dim:
            # Persistent buffers: they follow .to(device) and are saved in the state dict (the
            # constructor arguments also keep them in the hparams). A constant column has std 0;
            # it is only centred (dividing by 1), not blown up.
            self.register_buffer("feature_mean", mean)
            self.register_buffer("feature_std", torch.where(std > 0, std, torch.ones_like(std)))
        self.scale = float(scale)
        self.embedding = (
            nn.Embedding(self.num_regions, region_embedding_dim) if region_embedding_dim else None
        )
        gate_in = region_embedding_dim + self.region_feature_dim
        self.gate = (
            nn.Sequential(
                nn.Linear(gate_in, gate_hidden),
                nn.ReLU(),
                nn.Linear(gate_hidden, self.driven_dim),
            )
            if gate_hidden
            else nn.Linear(gate_in, self.driven_dim)
        )

    def forward(
        self, h: Tensor, region: Tensor, region_features: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mask the region-driven dimensions of ``h``.

        Args:
            h: ``[N, H]`` representation.
            region: ``[N]`` integer region ids in ``[0, num_regions)``.
            region_features: ``[N, F]`` region feature columns; required when F > 0, refused when
                F = 0 (a silently ignored column is a config mistake).

        Returns:
            ``(h', mask)``: ``[N, H]`` with the first ``invariant_dim`` columns of ``h`` unchanged,
            and the ``[N, H - invariant_dim]`` mask in ``[0, scale]``.

        Raises:
            ValueError: a region id outside ``[0, num_regions)`` (names the id and num_regions),
                or inputs of the wrong shape.
        """
        if h.ndim != 2 or h.shape[1] != self.hidden_size:
            raise ValueError(f"h must be [N, {self.hidden_size}], got {tuple(h.shape)}")
        if region.shape != h.shape[:1]:
            raise ValueError(f"region must be [N={h.shape[0]}], got {tuple(region.shape)}")
        check_region_ids(region, self.num_regions)
        gate_in = self._gate_input(region, region_features, h)
        mask = self.scale * torch.sigmoid(self.gate(gate_in))
        h_inv, h_reg = h.split([self.invariant_dim, self.driven_dim], dim=-1)
        return torch.cat([h_inv, h_reg * mask.to(h_reg.dtype)], dim=-1), mask

    def _gate_input(self, region: Tensor, region_features: Tensor | None, h: Tensor) -> Tensor:
        parts = [] if self.embedding is None else [self.embedding(region)]
        if self.region_feature_dim:
            expected = (h.shape[0], self.region_feature_dim)
            if region_features is None:
                named = f" (columns {self.feature_columns})" if self.feature_columns else ""
                raise ValueError(
                    f"region mask built with region_feature_dim={self.region_feature_dim} "
                    f"needs region_features{named}"
                )
            if tuple(region_features.shape) != expected:
                raise ValueError(
                    f"region_features must be {list(expected)}, got {list(region_features.shape)}"
                )
            parts.append(self.standardise(region_features).to(self.gate_dtype))
        elif region_features is not None:
            raise ValueError(
                f"got region_features with {region_features.shape[-1]} column(s) but the region "
                "mask was built with region_feature_dim=0; set region_mask.region_feature_dim"
            )
        return torch.cat(parts, dim=-1)

    def standardise(self, region_features: Tensor) -> Tensor:
        """``(x - feature_mean) / feature_std`` in float32, ``[N, F] -> [N, F]``."""
        return (region_features.float() - self.feature_mean) / self.feature_std

    def set_feature_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Replace the standardisation statistics (e.g. fitted on the training data at setup)."""
        dim = self.region_feature_dim
        mean_t = _feature_stat(mean, "feature_mean", dim, 0.0).to(self.feature_mean.device)
        std_t = _feature_stat(std, "feature_std", dim, 1.0).to(self.feature_std.device)
        if (std_t < 0).any():
            raise ConfigError(f"region_mask.feature_std must be >= 0, got {std_t.tolist()}")
        self.feature_mean.copy_(mean_t)
        self.feature_std.copy_(torch.where(std_t > 0, std_t, torch.ones_like(std_t)))

    @property
    def gate_dtype(self) -> torch.dtype:
        return next(self.gate.parameters()).dtype


def _feature_columns(columns: Sequence[str], dim: int) -> list[str]:
    if isinstance(columns, str):
        raise ConfigError(f"region_mask.feature_columns must be a list of names, got {columns!r}")
    names = [str(c) for c in columns]
    if names and len(names) != dim:
        raise ConfigError(
            f"region_mask.feature_columns names {len(names)} column(s) {names} but "
            f"region_feature_dim={dim}"
        )
    return names


def _feature_stat(values: Sequence[float] | None, name: str, dim: int, default: float) -> Tensor:
    """``values`` as a finite float32 ``[dim]`` tensor (``None``: ``default`` everywhere)."""
    if values is None:
        return torch.full((dim,), default, dtype=torch.float32)
    if not dim:
        raise ConfigError(f"region_mask.{name} is given but region_feature_dim=0")
    tensor = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    if tensor.shape != (dim,) or not torch.isfinite(tensor).all():
        raise ConfigError(
            f"region_mask.{name} must be {dim} finite number(s) (one per region feature "
            f"column), got {list(values)}"
        )
    return tensor


REGION_MASKS: dict[str, type[nn.Module]] = {"feature": FeatureRegionMask}
_FIXED = ("hidden_size", "num_regions")


def build_region_mask(
    spec: Mapping[str, object] | None, hidden_size: int, num_regions: int
) -> nn.Module | None:
    """Build the region mask a config asks for, or ``None``.

    Args:
        spec: ``None``, ``{"name": "none"}``, or ``{"name": "feature", **options}`` with the
            options of :class:`FeatureRegionMask` (e.g. ``scale``, ``invariant_fraction``).
        hidden_size: H of the representation the mask gates.
        num_regions: Number of region ids.

    Raises:
        ConfigError: (a ``ValueError``) naming an unknown mask or option.
    """
    if spec is None:
        return None
    options = dict(spec)
    if "name" not in options:
        raise ConfigError(f"region_mask needs a 'name' (one of {['none', *REGION_MASKS]})")
    name = options.pop("name")
    if name in (None, "none"):
        if options:
            raise ConfigError(f"region_mask 'none' takes no options, got {sorted(options)}")
        return None
    if name not in REGION_MASKS:
        raise ConfigError(f"unknown region mask {name!r}; valid names: {['none', *REGION_MASKS]}")
    cls = REGION_MASKS[name]
    check_options(cls, options, f"region mask {name!r}", _FIXED)
    return cls(hidden_size=hidden_size, num_regions=num_regions, **options)
