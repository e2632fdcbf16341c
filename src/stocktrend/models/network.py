"""TrendNet: CNN -> BiLSTM -> Transformer -> attention pooling -> dense head.

Built only from a ModelConfig (see models/config.py). The top-level submodules are
named ``cnn``, ``lstm``, ``transformer``, ``pool`` and ``head`` so parameters can be
counted per block (``parameter_counts``) and compared with the reference document.
``build_network`` builds the config's family: this one, or the Temporal-Fusion-style
network of ``models/tft.py``; both answer ``outputs(x)`` with the same ``NetOutputs``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from stocktrend.models.config import ModelConfig

BLOCKS = ("cnn", "lstm", "transformer", "pool", "head")
FAMILY_BLOCKS = {"trendnet": BLOCKS, "tft": ("vsn", "lstm", "attention", "pool", "head")}
VOL_HEAD = "vol_head"  # the multi-task block, present only with ModelConfig.volatility_head
READOUT = "readout"  # the window's linear readout, present only with ModelConfig.window_readout


class NetOutputs(NamedTuple):
    logits: torch.Tensor  # (B, C)
    attention: torch.Tensor  # (B, L) pooling weights over the window's steps
    volatility: torch.Tensor | None  # (B,) standardised log volatility (ModelConfig.volatility_head)
    feature_weights: torch.Tensor | None  # (B, F) variable-selection weights (family "tft")


def check_input(cfg: ModelConfig, x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[-1] != cfg.n_features:
        raise ValueError(f"the network expects (batch, seq_len, {cfg.n_features}) inputs, got {tuple(x.shape)}")
    steps = min(cfg.window_readout, cfg.seq_len)
    if x.shape[1] < steps:
        raise ValueError(f"the network's window readout (model.window_readout) reads the last {steps} steps; "
                         f"got windows of {x.shape[1]}")


class ConvBlock(nn.Module):
    """Conv1d (odd kernel, 'same' padding) -> BatchNorm1d -> ReLU -> Dropout, optional skip."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float, residual: bool):
        super().__init__()
        # padding=kernel//2 equals 'same' for an odd kernel and stride 1: the output at
        # step t sees t-k//2..t+k//2 of the window, all of which are <= the window end.
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.skip: nn.Module | None = None
        if residual:
            # A 1x1 convolution matches channel counts; identity when they already match.
            self.skip = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, L)
        h = self.bn(self.conv(x))  # (B, C_out, L)
        if self.skip is not None:
            h = h + self.skip(x)  # (B, C_out, L)
        return self.drop(self.act(h))  # (B, C_out, L)


class CNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch = cfg.cnn_channels()
        self.blocks = nn.Sequential(
            *(
                ConvBlock(ch[i], ch[i + 1], cfg.cnn_kernel, cfg.cnn_dropout, cfg.cnn_residual)
                for i in range(cfg.cnn_layers)
            )
        )
        self.out_channels = ch[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, F)
        h = self.blocks(x.transpose(1, 2))  # Conv1d wants channels first: (B, C, L)
        return h.transpose(1, 2)  # (B, L, C)


class BiLSTM(nn.Module):
    """Stacked bidirectional LSTM (or GRU, ``cfg.rnn``); dropout between layers (PyTorch's)
    and after the stack. Either way the block is ``lstm`` in the state dict and the counts."""

    def __init__(self, cfg: ModelConfig, input_size: int):
        super().__init__()
        self.rnn = (nn.GRU if cfg.rnn == "gru" else nn.LSTM)(
            input_size,
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            batch_first=True,
            bidirectional=True,
            # PyTorch only applies this between layers and warns when there is one layer.
            dropout=cfg.lstm_dropout if cfg.lstm_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.lstm_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, C)
        out, _ = self.rnn(x)  # (B, L, 2H)
        return self.drop(out)  # (B, L, 2H)


def sinusoidal_encoding(length: int, d_model: int, device=None, dtype=None) -> torch.Tensor:
    """The fixed sin/cos table of Vaswani et al.: (length, d_model); no parameters."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )  # (ceil(D/2),)
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe.to(dtype) if dtype is not None else pe  # (L, D)


class TemporalEncoder(nn.Module):
    """TransformerEncoder over the BiLSTM output, optionally with sinusoidal positions.

    The reference added no positional encoding (order is implicit in the BiLSTM
    output); ``positional_encoding=True`` adds the fixed table, which has no
    parameters, so parameter counts and state dicts are unchanged.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.positional = cfg.positional_encoding
        self.encoder: nn.Module
        if cfg.transformer_layers == 0:
            self.encoder = nn.Identity()
            return
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.d_model,
            nhead=cfg.transformer_heads,
            dim_feedforward=cfg.transformer_ff,
            dropout=cfg.transformer_dropout,
            batch_first=True,
        )
        # enable_nested_tensor only helps padded batches (we have none) and warns otherwise.
        self.encoder = nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, D)
        if self.positional:
            x = x + sinusoidal_encoding(x.shape[1], x.shape[2], x.device, x.dtype)  # (B, L, D)
        return self.encoder(x)  # (B, L, D)


class AttentionPool(nn.Module):
    """Score each time step (Linear D->1), softmax over time, weighted sum -> (B, D)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.score = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, L, D)
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)  # (B, L), rows sum to 1
        context = torch.bmm(weights.unsqueeze(1), x).squeeze(1)  # (B, D)
        return context, weights


def dense_head(cfg: ModelConfig) -> nn.Sequential:
    """[Linear -> BatchNorm1d -> ReLU -> Dropout] per width, then Linear -> n_classes logits."""
    layers: list[nn.Module] = []
    width_in = cfg.d_model
    for width in cfg.head_widths:
        layers += [nn.Linear(width_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(cfg.head_dropout)]
        width_in = width
    layers.append(nn.Linear(width_in, cfg.n_classes))  # no softmax: the loss takes logits
    return nn.Sequential(*layers)


def volatility_head(cfg: ModelConfig) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear to one number: the standardised log volatility.
    Small on purpose: the shared trunk does the work, which is the point of multi-tasking."""
    width = cfg.head_widths[-1]
    return nn.Sequential(nn.Linear(cfg.d_model, width), nn.ReLU(), nn.Dropout(cfg.head_dropout), nn.Linear(width, 1))


class WindowReadout(nn.Module):
    """Linear map from the last ``k`` steps' raw features (flattened) to the logits.

    Its input is scaled by 1/sqrt(fan-in): Adam moves every weight by about the learning rate
    whatever its gradient, so an unscaled map over k x F inputs would move the logits some
    sqrt(k x F) times as fast as the trunk's last layer does. On the planted temporal market
    (a one-off run of bench/recipe_comparison.py, not kept) the unscaled readout's training loss
    rose above ln 2 during the warm-up and the test rank IC reached a third of the oracle's;
    scaled by 1/fan-in it learnt too slowly; by 1/sqrt(fan-in) it found most of the plant.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.steps = min(cfg.window_readout, cfg.seq_len)
        fan_in = self.steps * cfg.n_features
        self.scale = fan_in ** -0.5
        self.linear = nn.Linear(fan_in, cfg.n_classes, bias=False)
        nn.init.zeros_(self.linear.weight)  # starts as no readout: the trunk alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, F)
        return self.linear(x[:, -self.steps:].flatten(1) * self.scale)  # (B, n_classes)


def add_blocks_around_trunk(net: nn.Module, cfg: ModelConfig) -> None:
    """The optional blocks both families share: the volatility head and the window readout."""
    if cfg.volatility_head:
        net.vol_head = volatility_head(cfg)
    if cfg.window_readout:
        net.readout = WindowReadout(cfg)


def class_logits(net: nn.Module, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The head's logits on the pooled context, plus the window readout's where there is one."""
    logits = net.head(context)  # (B, n_classes)
    return logits + net.readout(x) if net.cfg.window_readout else logits


class TrendNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.cnn = CNN(cfg)
        self.lstm = BiLSTM(cfg, self.cnn.out_channels)
        self.transformer = TemporalEncoder(cfg)
        self.pool = AttentionPool(cfg.d_model)
        self.head = dense_head(cfg)
        add_blocks_around_trunk(self, cfg)

    def outputs(self, x: torch.Tensor) -> NetOutputs:
        check_input(self.cfg, x)
        h = self.cnn(x)  # (B, L, C)
        h = self.lstm(h)  # (B, L, D)  D = 2 * lstm_hidden
        h = self.transformer(h)  # (B, L, D)
        context, weights = self.pool(h)  # (B, D), (B, L)
        logits = class_logits(self, context, x)  # (B, n_classes)
        vol = self.vol_head(context).squeeze(-1) if self.cfg.volatility_head else None  # (B,)
        return NetOutputs(logits, weights, vol, None)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.outputs(x)
        return (out.logits, out.attention) if return_attention else out.logits


def build_network(cfg: ModelConfig) -> nn.Module:
    """The network of ``cfg.family``."""
    if cfg.family == "tft":
        from stocktrend.models.tft import TemporalFusionNet

        return TemporalFusionNet(cfg)
    return TrendNet(cfg)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable + frozen parameters per named block, plus ``total``.

    BatchNorm running statistics are buffers, not parameters, so they are not counted
    (as in torch/Keras "trainable params"). PyTorch's LSTM has two bias vectors per
    gate set (b_ih and b_hh), 8H per direction and layer, which Keras-style counts omit.
    """
    blocks = (FAMILY_BLOCKS[model.cfg.family] + ((VOL_HEAD,) if model.cfg.volatility_head else ())
              + ((READOUT,) if model.cfg.window_readout else ()))
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in blocks}
    counts["total"] = sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(counts[b] for b in blocks), "a parameter lives outside the named blocks"
    return counts
