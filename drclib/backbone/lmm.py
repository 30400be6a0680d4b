"""The pocket LMM: a small multimodal causal LM that reads and writes visual tokens.

It stands in for LaVIT, the LMM behind DRC and Pigeon: an image becomes a sequence of
codebook ids (:mod:`drclib.backbone.tokenizer`: 64 ids for a 32x32 sticker), and a Llama-family
causal LM from ``transformers`` predicts them like words. Its vocabulary joins three parts,
in this order (ids are contiguous within each part):

====================  ==============================================================
specials              ``<pad> <unk> <bos> <eos> <img> </img> <z> <sep>``
visual codes          ``<v000>`` ... ``<vK-1>``: visual code c has id ``visual_offset + c``
text words            every word of the emoji names, style names and instructions
====================  ==============================================================

Sequences it is pretrained on (:func:`drclib.train.pretrain_backbone`)::

    text-to-image:  <bos> a sticker of cat face in noto style <img> v v ... v </img> <eos>
    image-to-text:  <bos> <img> v v ... v </img> a sticker of cat face in noto style <eos>

``<z>`` marks where later stages inject *latent instructions* (DRC's z, as input embeddings
rather than token ids), which is why :meth:`PocketLMM.generate_images` also takes
``inputs_embeds``. Generation is constrained to visual codes for exactly 64 steps and uses
the KV cache.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drclib.checkpoint import CheckpointError, Pretrained, load_shipped, shipped_dir
from drclib.io import atomic_path

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>", "<img>", "</img>", "<z>", "<sep>")
PAD, UNK, BOS, EOS, IMG, IMG_END, Z, SEP = range(len(SPECIALS))
TOKENIZER_FILE = "tokenizer.json"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear layers of the Llama blocks that get LoRA adapters (attention and MLP)."""


def sticker_caption(name: str, style: str) -> str:
    """The caption the LMM is pretrained on, e.g. ``a sticker of cat face in noto style``."""
    return f"a sticker of {name} in {style} style"


def factor_caption(name: str | None = None, style: str | None = None) -> str:
    """A caption naming one factor: ``a sticker of cat face`` (the emoji only) or ``a sticker in
    noto style`` (the style only); pretraining's factor dropout uses them, and guidance away from
    the emoji-only one pushes a drawing towards its caption's style."""
    if (name is None) == (style is None):
        raise ValueError("give exactly one of name (the emoji) or style")
    return f"a sticker of {name}" if name is not None else f"a sticker in {style} style"


def _visual_token(code: int, width: int) -> str:
    return f"<v{code:0{width}d}>"


# ---------------------------------------------------------------------------- text tokenizer
def build_text_tokenizer(corpus: Iterable[str], n_visual: int):
    """A word-level tokenizer (``tokenizers``) over ``corpus``, wrapped as a transformers
    ``PreTrainedTokenizerFast``; specials first, then ``n_visual`` visual tokens, then words.

    Words are lower-cased with accents stripped; punctuation splits off as its own token;
    a word never seen in the corpus becomes ``<unk>``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
    pre = pre_tokenizers.Whitespace()
    words: dict[str, None] = {}
    for text in corpus:
        for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            words.setdefault(w, None)
    width = len(str(max(n_visual - 1, 0)))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for c in range(n_visual):
        vocab[_visual_token(c, width)] = len(vocab)
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    return _wrap(tok, n_visual)


def _wrap(tok, n_visual: int):
    from transformers import PreTrainedTokenizerFast

    width = len(str(max(n_visual - 1, 0)))
    specials = list(SPECIALS[4:]) + [_visual_token(c, width) for c in range(n_visual)]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>",
                                   additional_special_tokens=specials)
    return fast


def save_text_tokenizer(tok, folder: str | Path) -> None:
    """Write ``tokenizer.json`` into a checkpoint folder (atomic)."""
    with atomic_path(Path(folder) / TOKENIZER_FILE) as tmp:
        tmp.write_text(tok.backend_tokenizer.to_str(), encoding="utf-8")


def load_text_tokenizer(folder: str | Path, n_visual: int):
    """Read the ``tokenizer.json`` of a checkpoint folder, with clear errors."""
    from tokenizers import Tokenizer

    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete: {TOKENIZER_FILE} is missing")
    try:
        return _wrap(Tokenizer.from_str(path.read_text(encoding="utf-8")), n_visual)
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt file
        raise CheckpointError(f"checkpoint {folder} has an unreadable tokenizer ({e}); save it again") from e


def default_corpus(stickers) -> list[str]:
    """Every text the kit feeds the LMM: captions of all emoji in all styles, the sample
    instructions and DRC's hybrid-prompt sentence."""
    from drclib.data.users import INSTRUCTIONS

    texts = [sticker_caption(n, s) for n in stickers.names for s in stickers.styles]
    texts += list(INSTRUCTIONS)
    texts.append("Create an image that meets the specified requirements")
    return texts


# ---------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class LMMConfig:
    """Sizes of the pocket LMM. ``vocab_size`` counts specials + visual codes + words."""

    vocab_size: int
    n_visual: int = 256
    tokens_per_image: int = 64
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 704
    max_positions: int = 192
    rope_theta: float = 10000.0

    @property
    def visual_offset(self) -> int:
        return len(SPECIALS)

    @property
    def first_word(self) -> int:
        """Id of the first word: the words follow the specials and the visual codes."""
        return self.visual_offset + self.n_visual


def _cache_kwarg() -> str:
    """transformers 5 calls the KV cache argument ``cache``; 4.x calls it ``past_key_values``."""
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


class WithTextTokenizer(Pretrained):
    """A :class:`~drclib.checkpoint.Pretrained` model that owns a text tokenizer
    (``self.text_tokenizer``), saved as ``tokenizer.json`` beside its weights. A config with
    ``n_visual`` (the LMM) gets that many visual tokens back on load; the vocabulary must
    match the config's ``vocab_size``."""

    def save_files(self, folder: Path) -> None:
        if getattr(self, "text_tokenizer", None) is None:
            raise ValueError(f"this {self.kind()} has no text tokenizer to save; build it with from_stickers")
        save_text_tokenizer(self.text_tokenizer, folder)

    @classmethod
    def load_files(cls, folder: Path, config) -> dict:
        tok = load_text_tokenizer(folder, getattr(config, "n_visual", 0))
        if len(tok) != config.vocab_size:
            raise CheckpointError(f"checkpoint {folder}: tokenizer has {len(tok)} tokens, config says "
                                  f"{config.vocab_size}; the folder mixes two models")
        return {"text_tokenizer": tok}


class PocketLMM(WithTextTokenizer):
    """A Llama-family causal LM over the joint text + visual vocabulary, with its tokenizer.

    >>> lmm = PocketLMM.from_pretrained("data/checkpoints/lmm")       # doctest: +SKIP
    >>> codes = lmm.generate_images(["a sticker of cat face in noto style"], seed=0)
    >>> codes.shape                                                    # doctest: +SKIP
    torch.Size([1, 64])
    """

    config_class = LMMConfig

    def __init__(self, config: LMMConfig, text_tokenizer=None):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = config
        heads = config.num_heads
        self.lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers, num_attention_heads=heads, num_key_value_heads=heads,
            intermediate_size=config.intermediate_size, max_position_embeddings=config.max_positions,
            rope_theta=config.rope_theta, tie_word_embeddings=True, pad_token_id=PAD,
            bos_token_id=BOS, eos_token_id=EOS, attention_dropout=0.0))
        self.text_tokenizer = text_tokenizer
        self._cache_arg = _cache_kwarg()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_stickers(cls, stickers, n_visual: int = 256, **sizes) -> "PocketLMM":
        """A fresh (untrained) LMM whose text vocabulary covers the sticker set's texts."""
        tok = build_text_tokenizer(default_corpus(stickers), n_visual)
        return cls(LMMConfig(vocab_size=len(tok), n_visual=n_visual, **sizes), tok)

    # ------------------------------------------------------------------ vocabulary helpers
    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    @property
    def visual_offset(self) -> int:
        return self.config.visual_offset

    @property
    def first_word(self) -> int:
        """Id of the first word; ids ``first_word`` .. ``vocab_size - 1`` are the word table."""
        return self.config.first_word

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Visual codes ``[..., 64]`` -> token ids in the joint vocabulary."""
        codes = torch.as_tensor(codes)
        if codes.dtype not in (torch.int64, torch.int32) or codes.numel() == 0:
            raise ValueError(f"codes must be a non-empty integer tensor, got {codes.dtype} {tuple(codes.shape)}")
        if codes.min() < 0 or codes.max() >= self.config.n_visual:
            raise ValueError(f"visual codes must lie in [0, {self.config.n_visual}), got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return codes.long() + self.visual_offset

    def text_ids(self, text: str) -> list[int]:
        """Word ids of ``text`` (no specials added)."""
        if self.text_tokenizer is None:
            raise ValueError("this PocketLMM has no text tokenizer")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.text_tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.text_tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def describe_ids(self, ids: Sequence[int]) -> list[str]:
        """The token string of every id, e.g. ``['<bos>', 'a', 'sticker', ..., '<v017>']``."""
        return self.text_tokenizer.convert_ids_to_tokens([int(i) for i in ids])

    def t2i_ids(self, text: str, codes: torch.Tensor | None = None) -> list[int]:
        """``<bos> text <img>`` (a generation prompt), or the whole training sequence with
        ``codes``: ``<bos> text <img> v*64 </img> <eos>``."""
        ids = [BOS, *self.text_ids(text), IMG]
        if codes is not None:
            ids += self.codes_to_ids(codes).tolist() + [IMG_END, EOS]
        return ids

    def i2t_ids(self, codes: torch.Tensor, text: str | None = None) -> list[int]:
        """``<bos> <img> v*64 </img>`` (+ ``text <eos>`` for training)."""
        ids = [BOS, IMG, *self.codes_to_ids(codes).tolist(), IMG_END]
        if text is not None:
            ids += [*self.text_ids(text), EOS]
        return ids

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The LMM's own embedding lookup E (ids -> ``[..., hidden]``)."""
        return self.lm.get_input_embeddings()(torch.as_tensor(ids, device=self.device))

    def visual_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """E_x of the paper: the embedding sequence of an image's visual tokens, ``[B, 64, d]``."""
        return self.embed(self.codes_to_ids(torch.as_tensor(codes, device=self.device)))

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, labels=None, **kw):
        return self.lm(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                       labels=labels, **kw)

    # ------------------------------------------------------------------ LoRA (peft)
    def add_lora(self, rank: int = 8, alpha: int = 16, targets: Sequence[str] = LORA_TARGETS,
                 dropout: float = 0.0) -> None:
        """Inject LoRA adapters (peft) into the attention and MLP projections. The base weights
        stay as they are; the adapters start at zero, so the model's outputs do not change
        until they train. Call :meth:`freeze_base` to train the adapters only."""
        from peft import LoraConfig, inject_adapter_in_model

        if self.has_lora:
            raise ValueError("this LMM already has LoRA adapters")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none")
        self.lm = inject_adapter_in_model(cfg, self.lm)
        self.lora_config = cfg

    @property
    def has_lora(self) -> bool:
        return getattr(self, "lora_config", None) is not None

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.lm.named_parameters() if "lora_" in n]

    def freeze_base(self) -> None:
        """Only the LoRA adapters (if any) keep ``requires_grad``."""
        for n, p in self.lm.named_parameters():
            p.requires_grad_("lora_" in n)

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        if not self.has_lora:
            raise ValueError("this LMM has no LoRA adapters")
        return get_peft_model_state_dict(self.lm)

    def save_lora(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write the adapters the way peft does (``adapter_config.json`` +
        ``adapter_model.safetensors``), atomically."""
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.lora_state_dict().items()}
        with atomic_path(folder / "adapter_model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        cfg = self.lora_config.to_dict()
        cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
        with atomic_path(folder / "adapter_config.json") as tmp:
            tmp.write_text(json.dumps(cfg, indent=2, default=str) + "\n")

    def load_lora(self, folder: str | Path) -> None:
        """Inject and load adapters written by :meth:`save_lora` (or by peft)."""
        import json

        from peft import set_peft_model_state_dict
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CheckpointError(f"LoRA adapter in {folder} is incomplete: {p.name} is missing; save it again")
        try:
            cfg = json.loads(cfg_path.read_text())
            state = load_file(str(w_path))
        except (json.JSONDecodeError, SafetensorError, OSError) as e:
            raise CheckpointError(f"LoRA adapter in {folder} is unreadable ({e}); save it again") from e
        self.add_lora(int(cfg["r"]), int(cfg["lora_alpha"]), tuple(cfg["target_modules"]),
                      float(cfg.get("lora_dropout", 0.0)))
        result = set_peft_model_state_dict(self.lm, state)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            raise CheckpointError(f"LoRA adapter in {folder} does not match this LMM (missing {missing[:3]}, "
                                  f"unexpected {list(result.unexpected_keys)[:3]})")
        own = dict(self.lm.named_parameters())
        for k, v in state.items():
            name = k.replace(".weight", ".default.weight")
            if name in own and own[name].shape != v.shape:
                raise CheckpointError(f"LoRA adapter in {folder} has {k} of shape {tuple(v.shape)}, this LMM "
                                      f"needs {tuple(own[name].shape)}")

    # ------------------------------------------------------------------ generation
    def _step(self, embeds, mask, positions, cache):
        kw = {self._cache_arg: cache} if cache is not None else {}
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
                      **kw)
        return out.logits[:, -1].float(), out

    def _prompt_embeddings(self, text, inputs_embeds, attention_mask, num_images):
        """Left-padded prompt embeddings ending in ``<img>`` and their attention mask."""
        if (text is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of text (a str or list of str) or inputs_embeds [B, T, d]")
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not texts or not all(isinstance(t, str) for t in texts):
                raise ValueError("text must be a str or a non-empty list of str")
            texts = [t for t in texts for _ in range(num_images)]
            seqs = [self.t2i_ids(t) for t in texts]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, width - len(s):] = torch.tensor(s)
                mask[i, width - len(s):] = 1
            return self.embed(ids.to(self.device)), mask.to(self.device)
        emb = torch.as_tensor(inputs_embeds)
        if emb.ndim != 3 or emb.shape[-1] != self.config.hidden_size:
            raise ValueError(f"inputs_embeds must be [B, T, {self.config.hidden_size}], got {tuple(emb.shape)}")
        if not torch.isfinite(emb).all():
            raise ValueError("inputs_embeds contains NaN or inf")
        emb = emb.to(self.device, self.lm.get_input_embeddings().weight.dtype)
        mask = (torch.ones(emb.shape[:2], dtype=torch.long, device=self.device) if attention_mask is None
                else torch.as_tensor(attention_mask, device=self.device).long())
        if mask.shape != emb.shape[:2]:
            raise ValueError(f"attention_mask must be {tuple(emb.shape[:2])}, got {tuple(mask.shape)}")
        if not (mask[:, -1] == 1).all():
            raise ValueError("inputs_embeds must be left-padded: the last position of every row must be real")
        img = self.embed(torch.full((emb.shape[0], 1), IMG, device=self.device))
        emb, mask = torch.cat([emb, img], 1), torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        if num_images > 1:
            emb, mask = emb.repeat_interleave(num_images, 0), mask.repeat_interleave(num_images, 0)
        return emb, mask

    @torch.no_grad()
    def generate_images(self, text: str | list[str] | None = None, *, inputs_embeds: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None, num_images: int = 1, seed: int | None = None,
                        greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
                        use_cache: bool = True, negative_text: str | list[str] | None = None,
                        guidance_scale: float = 0.0) -> torch.LongTensor:
        """Generate visual codes ``[B * num_images, 64]`` for text prompts or prompt embeddings.

        Exactly ``tokens_per_image`` steps, each constrained to the visual codes (other tokens
        get probability 0). ``inputs_embeds`` (left-padded, with ``attention_mask``) is the
        prefix before ``<img>``: later stages put latent instructions there. ``seed`` makes
        sampling repeatable; ``greedy`` takes the most likely code. ``use_cache=False``
        recomputes the whole sequence every step (for the benchmark only: much slower).

        ``guidance_scale`` w > 0 with ``negative_text`` (one prompt, or one per text prompt) is
        classifier-free guidance: each step scores codes by ``log p(c | text) + w * (log p(c |
        text) - log p(c | negative))``, pushing the image towards what the prompt says and the
        negative prompt does not (e.g. the negative ``a sticker of cat face`` for ``a sticker
        of cat face in noto style`` pushes towards the style). Both prompts read the same codes
        drawn so far; it costs a second batch row per image.
        """
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0 (or use greedy=True), got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.config.n_visual:
            raise ValueError(f"top_k must be in 1..{self.config.n_visual}, got {top_k}")
        if not (isinstance(guidance_scale, (int, float)) and guidance_scale >= 0 and np.isfinite(guidance_scale)):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        guided = guidance_scale > 0
        if guided:
            if negative_text is None or text is None:
                raise ValueError("guidance_scale > 0 needs text prompts and negative_text (the prompt to "
                                 "guide away from, e.g. the caption without its style)")
            texts = [text] if isinstance(text, str) else list(text)
            negs = [negative_text] * len(texts) if isinstance(negative_text, str) else list(negative_text)
            if len(negs) != len(texts):
                raise ValueError(f"negative_text has {len(negs)} prompts for {len(texts)} text prompts; "
                                 "give one, or one per prompt")
            text = texts + negs
        elif negative_text is not None:
            raise ValueError("negative_text is only used with guidance_scale > 0")
        was_training = self.training
        self.eval()
        emb, mask = self._prompt_embeddings(text, inputs_embeds, attention_mask, num_images)
        n_out = emb.shape[0] // 2 if guided else emb.shape[0]
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,))))
        lo, hi = self.visual_offset, self.visual_offset + self.config.n_visual
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = None
        if use_cache:
            from transformers import DynamicCache

            cache = DynamicCache()
        out_codes = []
        cur_emb, cur_mask, cur_pos = emb, mask, positions
        for step in range(self.config.tokens_per_image):
            if use_cache:
                logits, _ = self._step(cur_emb, cur_mask, cur_pos, cache)
            else:
                logits, _ = self._step(emb, mask, positions, None)
            logits = logits[:, lo:hi]
            if guided:
                cond, neg = F.log_softmax(logits[:n_out], -1), F.log_softmax(logits[n_out:], -1)
                logits = cond + guidance_scale * (cond - neg)
            if greedy:
                code = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, -1).cpu()
                code = torch.multinomial(probs, 1, generator=gen).squeeze(1).to(self.device)
            out_codes.append(code)
            if guided:
                code = torch.cat([code, code])
            nxt = self.embed((code + lo)[:, None])
            next_pos = positions[:, -1:] + 1
            if use_cache:
                cur_mask = torch.cat([cur_mask, cur_mask.new_ones(cur_mask.shape[0], 1)], 1)
                cur_emb, cur_pos = nxt, next_pos
                positions = torch.cat([positions, next_pos], 1)
            else:
                emb = torch.cat([emb, nxt], 1)
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
                positions = torch.cat([positions, next_pos], 1)
        self.train(was_training)
        return torch.stack(out_codes, 1)

    @torch.no_grad()
    def caption(self, codes: torch.Tensor, max_new_tokens: int = 16) -> list[str]:
        """Image-to-text: greedy captions of images given as visual codes ``[B, 64]``."""
        codes = torch.as_tensor(codes)
        if codes.ndim != 2 or codes.shape[1] != self.config.tokens_per_image:
            raise ValueError(f"codes must be [B, {self.config.tokens_per_image}], got {tuple(codes.shape)}")
        was_training = self.training
        self.eval()
        ids = torch.tensor([self.i2t_ids(c) for c in codes], device=self.device)
        words_lo = self.first_word
        from transformers import DynamicCache

        cache = DynamicCache()
        kw = {self._cache_arg: cache}
        out = self.lm(input_ids=ids, use_cache=True, **kw)
        done = torch.zeros(len(ids), dtype=torch.bool, device=self.device)
        result = [[] for _ in range(len(ids))]
        pos = ids.shape[1]
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            allowed = torch.full_like(logits, float("-inf"))
            allowed[:, words_lo:] = 0
            allowed[:, EOS] = 0
            nxt = (logits + allowed).argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i] and t != EOS:
                    result[i].append(t)
            done |= nxt == EOS
            if done.all():
                break
            out = self.lm(input_ids=nxt[:, None], use_cache=True,
                          position_ids=torch.full((len(ids), 1), pos, device=self.device), **kw)
            pos += 1
        self.train(was_training)
        return [self.decode_text(r) for r in result]

    @torch.no_grad()
    def caption_logprob(self, codes: torch.Tensor, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Image-to-text read as a score: ``log p(text <eos> | <bos> <img> codes </img>)``, the
        log-likelihood the LMM gives each caption of each image (codes ``[B, 64]``, one text per
        image or one for all), float32 ``[B]`` on the CPU. Higher means the LMM reads the image
        as that caption; :mod:`drclib.backbone.best_of` uses it to pick among drawings."""
        codes = torch.as_tensor(codes)
        if codes.ndim != 2 or codes.shape[1] != self.config.tokens_per_image:
            raise ValueError(f"codes must be [B, {self.config.tokens_per_image}], got {tuple(codes.shape)}")
        texts = [texts] * len(codes) if isinstance(texts, str) else list(texts)
        if len(texts) != len(codes):
            raise ValueError(f"got {len(codes)} images but {len(texts)} texts; give one text per image, or one str")
        was_training = self.training
        self.eval()
        prefix = 3 + self.config.tokens_per_image          # <bos> <img> codes </img>
        out = []
        for i in range(0, len(codes), batch_size):
            seqs = [self.i2t_ids(c, t) for c, t in zip(codes[i:i + batch_size], texts[i:i + batch_size])]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            logp = F.log_softmax(self.lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
            logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
            scored = mask[:, 1:].clone()
            scored[:, :prefix - 1] = 0                   # only the caption's words and <eos> count
            out.append((logp * scored).sum(1).cpu())
        self.train(was_training)
        return torch.cat(out)


def default_checkpoint_dir() -> Path:
    return shipped_dir("lmm")


def load_default(device: str | torch.device = "cpu") -> PocketLMM:
    """The shipped pocket LMM (``data/checkpoints/lmm``)."""
    return load_shipped(PocketLMM, default_checkpoint_dir(), "python -m drclib.train backbone --out data/checkpoints/lmm", device)



@torch.no_grad()
def encode_sticker_set(tokenizer, stickers, batch_size: int = 512) -> torch.Tensor:
    """The visual codes of every sticker, ``[n_styles, n_emoji, 64]`` (long, on the CPU)."""
    flat = stickers.images.reshape(-1, *stickers.images.shape[2:])
    out = []
    for i in range(0, len(flat), batch_size):
        out.append(tokenizer.encode_uint8(flat[i:i + batch_size]).cpu())
    return torch.cat(out).view(stickers.n_styles, stickers.n_emoji, -1)


def sticker_codes(tokenizer, stickers, *, cache: bool = True) -> torch.Tensor:
    """:func:`encode_sticker_set`, cached in ``<repo>/.cache/codes/`` under a key made of the
    tokenizer's weights and the images (encoding all 8,220 stickers takes ~20 s on 2 cores)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from drclib.data.stickers import repo_root

    if not cache:
        return encode_sticker_set(tokenizer, stickers)
    h = hashlib.sha256()
    for k, v in sorted(tokenizer.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    h.update(np.ascontiguousarray(stickers.images).tobytes())
    path = repo_root() / ".cache" / "codes" / f"{h.hexdigest()[:24]}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["codes"]
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            pass
    codes = encode_sticker_set(tokenizer, stickers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"codes": codes.contiguous()}, str(tmp))
    return codes
