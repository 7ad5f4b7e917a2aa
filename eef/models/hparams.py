"""Training hyper-parameters: the ``train`` (SFT) and ``dpo`` sections of the experiment
config, free of torch so that the config tree (and the command line's help) loads without it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


@dataclass
class TrainConfig:
    """SFT hyper-parameters (saved as ``eef_train.json`` next to the model)."""

    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    epochs: float = field(default=3.0, metadata={"help": "passes over the examples"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps "
                                                       "(0: from epochs)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per optimizer step"})
    micro_batch_tokens: int = field(default=16384, metadata={
        "help": "padded tokens per forward pass; a batch is split into micro-batches "
                "(gradient accumulation) to fit this"})
    max_tokens: int = field(default=1024, metadata={
        "help": "context budget per example (see eef.models.format: windows, never drops a "
                "trained turn)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps of linear warmup"})
    schedule: Literal["cosine", "constant"] = field(default="cosine", metadata={
        "help": "lr schedule after warmup"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: off)"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0: full fine-tuning)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                              metadata={"help": "comma-separated module names LoRA adapts"})
    seed: int = field(default=0, metadata={"help": "seed of data order and initialisation"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps (resume)"})
    log_every: int = field(default=1, metadata={"help": "append the loss to train_log.jsonl "
                                                        "every N steps"})
    trim_every: int = field(default=10, metadata={
        "help": "every N optimizer steps give the heap's free pages back to the system "
                "(eef.memory.release; 0: never).  Without it glibc keeps what the tensors of "
                "ever-changing shapes freed and a long run's resident set grows by ~60 MB per "
                "step (docs/models.md, 'Training memory'); it changes nothing in the model"})
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = field(default="no", metadata={
        "help": "accelerate mixed precision: no | bf16 | fp16 (GPUs) | auto (bf16 where the "
                "CPU or GPU computes it fast and the model has 50M+ parameters, else no).  "
                "bf16 on a CPU with AVX512-BF16 or AMX: autocast over float32 weights; with "
                "LoRA the frozen base weights are held in bf16 (docs/models.md)"})
    system: str | None = field(default=None, metadata={"help": "system message of the chat "
                                                               "format"})
    id_aliases: bool | None = field(default=None, metadata={
        "help": "read and write WebShop identifiers as per-page aliases #1, #2, ... "
                "(eef.models.format.IdAliases; saved with the model, so its rollouts use them "
                "too); null: as the base model"})
    cut_note: bool | str | None = field(default=None, metadata={
        "help": "end the task prompt of every training window that leaves out earlier steps "
                "with a note saying so (true: eef.models.format.DEFAULT_CUT_NOTE, or the note's "
                "text; saved with the model, so its cut prompts carry it too): without it a "
                "later window reads as the episode's start followed by a later turn; null: "
                "as the base model"})
    decision_weight: float = field(default=1.0, metadata={
        "help": "loss weight of each trained turn's decision token (its first word after "
                "'Thought:', or the action's first token; eef.models.format.DECISION) against 1 "
                "for every other trained token, the sum still divided by the trained tokens: "
                "1 is Eq. 1 of the paper; the logged loss is the weighted one"})
    decision_probe: int = field(default=8, metadata={
        "help": "after training, score the decision token (a turn's first word) of the first "
                "4 trained turns of this many training trajectories in the saved model "
                "(eef.models.decisions; decisions.json next to the model): the mean loss hides "
                "a wrong decision under well-copied words; 0: off.  Not part of the run's key"})

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    def check(self) -> None:
        """Raise ValueError for settings no training can run with."""
        if not (isinstance(self.decision_weight, (int, float))
                and 0 <= self.decision_weight < float("inf")):
            raise ValueError(f"decision_weight must be a finite number >= 0, not "
                             f"{self.decision_weight!r}")
        if not (self.cut_note is None or isinstance(self.cut_note, bool)
                or (isinstance(self.cut_note, str) and self.cut_note.strip())):
            raise ValueError(f"cut_note must be true, false, null or a non-empty text, not "
                             f"{self.cut_note!r}")
        if not isinstance(self.decision_probe, int) or self.decision_probe < 0:
            raise ValueError(f"decision_probe must be an integer >= 0, not "
                             f"{self.decision_probe!r}")
        if not isinstance(self.trim_every, int) or self.trim_every < 0:
            raise ValueError(f"trim_every must be an integer >= 0, not {self.trim_every!r}")

    def key(self) -> dict[str, Any]:
        """The fields that identify a training run (``id_aliases`` and ``cut_note`` only when
        set and ``decision_weight`` only when not 1, so runs recorded before those fields
        existed keep their keys; ``decision_probe`` and ``trim_every`` never: they change
        nothing in the trained model)."""
        d = asdict(self)
        for name in ("id_aliases", "cut_note"):
            if d.get(name) is None:
                d.pop(name, None)
        d.pop("decision_probe", None)
        d.pop("trim_every", None)
        if d.get("decision_weight") == 1.0:  # Eq. 1: keys recorded before the field stay valid
            d.pop("decision_weight", None)
        return d


@dataclass
class DPOConfig:
    """DPO hyper-parameters of ETO (the experiment's ``dpo`` section); every other training
    setting (batch size, windows, LoRA, mixed precision, seed, checkpoints) is ``train``'s."""

    beta: float = field(default=0.1, metadata={
        "help": "DPO beta: strength of the pull towards the reference (ETO: 0.1 in its first "
                "iteration)"})
    lr: float | None = field(default=None, metadata={
        "help": "peak learning rate of DPO; null: train.lr / 20 (ETO's ratio: SFT 2e-5, "
                "DPO 1e-6)"})
    epochs: float = field(default=3.0, metadata={"help": "passes over the pairs (ETO: 3)"})
    schedule: Literal["constant", "cosine"] = field(default="constant", metadata={
        "help": "lr schedule after warmup: constant (ETO) or cosine"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps of linear "
                                                              "warmup (ETO: 0.1)"})
    reference: Literal["previous", "sft"] = field(default="previous", metadata={
        "help": "reference model of iteration i: 'previous' (the model it starts from, as "
                "ETO's released script; the SFT model at i = 1) or 'sft' (always the SFT "
                "model)"})

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """``train`` with this DPO's learning rate, epochs (not train.max_steps) and schedule."""
        from dataclasses import replace
        return replace(train, lr=self.lr if self.lr is not None else train.lr / 20,
                       epochs=self.epochs, max_steps=0, schedule=self.schedule,
                       warmup_ratio=self.warmup_ratio)

    def check(self) -> None:
        if not self.beta > 0 or (self.lr is not None and not self.lr > 0) or self.epochs <= 0:
            raise ValueError("dpo: beta, lr and epochs must be > 0")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"dpo.schedule: {self.schedule!r} is not constant or cosine")
        if self.reference not in ("previous", "sft"):
            raise ValueError(f"dpo.reference: {self.reference!r} is not previous or sft")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"dpo.warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
