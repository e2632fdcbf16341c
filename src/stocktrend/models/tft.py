"""A Temporal-Fusion-style network (Lim et al., 2021), compact, on the project's data path.

    windows (B, L, F) -> variable selection -> BiLSTM -> gated skip -> interpretable
    multi-head attention -> gated skip -> position-wise GRN -> attention pooling -> head(s)

What is kept from the Temporal Fusion Transformer: gated residual networks (GRN: ELU, a
gated linear unit, a skip and LayerNorm) as the building block; variable selection, i.e.
softmax weights over the input features at every step, computed from all of them; a recurrent
encoder; and interpretable attention, whose heads share one value projection so that the
mean of their weights is one readable pattern over time. What is not: static covariates,
known future inputs and quantile outputs (a 5-day direction from past windows has none of
them), and one GRN per feature (here: a per-feature embedding and one GRN shared by the
features, far fewer weights). The recurrent encoder is the project's bidirectional one: the
whole window is the past, so reading it in both directions sees nothing later than its end.

Well-kept implementations were looked at: pytorch-forecasting's ``TemporalFusionTransformer``
needs its own ``TimeSeriesDataSet`` pipeline (a second data path, its own normalisers and
encoders) and a Lightning module of its own; darts' ``TFTModel`` wraps a forecasting API
around it. Neither takes the scaled windows that every back-end, the Serve application and
the evaluation share, hence this compact version, trained by the same LightningModule.
Submodules are named ``vsn``, ``lstm``, ``attention``, ``pool``, ``head`` (and ``vol_head``)
for ``parameter_counts``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stocktrend.models.config import ModelConfig


class GatedLinearUnit(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


class GatedResidual(nn.Module):
    """GRN(a) = LayerNorm(skip(a) + GLU(Dropout(W2 ELU(W1 a))))."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out)
        self.fc1, self.fc2 = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_hidden)
        self.drop = nn.Dropout(dropout)
        self.glu = GatedLinearUnit(d_hidden, d_out)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.fc2(nn.functional.elu(self.fc1(a)))
        return self.norm(self.skip(a) + self.glu(self.drop(h)))


class GateAddNorm(nn.Module):
    """The TFT's gated skip connection: LayerNorm(residual + GLU(Dropout(x)))."""

    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.drop, self.glu, self.norm = nn.Dropout(dropout), GatedLinearUnit(d_in, d_out), nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.norm(residual + self.glu(self.drop(x)))


class VariableSelection(nn.Module):
    """Softmax weights over the F input features at every step, from all of them, and the
    weighted sum of the features' GRN-processed embeddings."""

    def __init__(self, n_features: int, d: int, dropout: float):
        super().__init__()
        self.embed_weight = nn.Parameter(torch.randn(n_features, d) / math.sqrt(d))
        self.embed_bias = nn.Parameter(torch.zeros(n_features, d))
        self.weights_grn = GatedResidual(n_features * d, d, n_features, dropout)
        self.feature_grn = GatedResidual(d, d, d, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, L, F)
        xi = x.unsqueeze(-1) * self.embed_weight + self.embed_bias  # (B, L, F, d)
        weights = torch.softmax(self.weights_grn(xi.flatten(-2)), dim=-1)  # (B, L, F), sums to 1 over F
        selected = (weights.unsqueeze(-1) * self.feature_grn(xi)).sum(dim=-2)  # (B, L, d)
        return selected, weights


class InterpretableAttention(nn.Module):
    """Multi-head self-attention whose heads share the value projection; the heads' outputs
    are averaged (not concatenated), so their mean weight matrix explains the output."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.d_k = heads, d_model // heads
        self.q, self.k = nn.Linear(d_model, heads * self.d_k), nn.Linear(d_model, heads * self.d_k)
        self.v, self.out = nn.Linear(d_model, self.d_k), nn.Linear(self.d_k, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, D)
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.d_k).transpose(1, 2)  # (B, h, L, d_k)
        k = self.k(x).view(b, n, self.heads, self.d_k).transpose(1, 2)  # (B, h, L, d_k)
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_k), dim=-1)  # (B, h, L, L)
        mixed = (self.drop(scores) @ self.v(x).unsqueeze(1)).mean(dim=1)  # (B, L, d_k), heads averaged
        return self.out(mixed)  # (B, L, D)


class FusionAttention(nn.Module):
    """Interpretable attention with its gated skip, then the position-wise GRN."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, p = cfg.d_model, cfg.transformer_dropout
        self.attn = InterpretableAttention(d, cfg.transformer_heads, p)
        self.gate = GateAddNorm(d, d, p)
        self.positionwise = GatedResidual(d, d, d, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.positionwise(self.gate(self.attn(x), x))


class FusionEncoder(nn.Module):
    """The recurrent encoder over the selected inputs, with the TFT's gated skip around it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from stocktrend.models.network import BiLSTM

        self.rnn = BiLSTM(cfg, cfg.tft_hidden)
        self.skip = nn.Linear(cfg.tft_hidden, cfg.d_model)
        self.gate = GateAddNorm(cfg.d_model, cfg.d_model, cfg.lstm_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, D)
        return self.gate(self.rnn(x), self.skip(x))


class TemporalFusionNet(nn.Module):
    """Same interface as ``TrendNet``: ``outputs(x)``, ``forward(x, return_attention)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from stocktrend.models.network import AttentionPool, add_blocks_around_trunk, dense_head

        self.cfg = cfg
        self.vsn = VariableSelection(cfg.n_features, cfg.tft_hidden, cfg.transformer_dropout)
        self.lstm = FusionEncoder(cfg)
        self.attention = FusionAttention(cfg)
        self.pool = AttentionPool(cfg.d_model)
        self.head = dense_head(cfg)
        add_blocks_around_trunk(self, cfg)

    def outputs(self, x: torch.Tensor):
        from stocktrend.models.network import NetOutputs, check_input, class_logits

        check_input(self.cfg, x)
        selected, weights = self.vsn(x)  # (B, L, d), (B, L, F)
        h = self.attention(self.lstm(selected))  # (B, L, D)
        context, attention = self.pool(h)  # (B, D), (B, L)
        vol = self.vol_head(context).squeeze(-1) if self.cfg.volatility_head else None
        # Per-feature selection weights, averaged over the window's steps: (B, F), rows sum to 1.
        return NetOutputs(class_logits(self, context, x), attention, vol, weights.mean(dim=1))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        out = self.outputs(x)
        return (out.logits, out.attention) if return_attention else out.logits
