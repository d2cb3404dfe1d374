"""The option groups of ``tinkex sample``: what to sample from, the prompt, the sampling
parameters and what to print besides the text. Each group checks its own combination."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tinkex_cli._options import option_group

if TYPE_CHECKING:
    from tinkex_types import SamplingParams

__all__ = [
    "DisplayOptions",
    "ModelOptions",
    "PromptOptions",
    "SamplingOptions",
    "display_options",
    "model_options",
    "parse_token_ids",
    "prompt_options",
    "sampling_options",
]


def parse_token_ids(text: str, *, param: str = "--prompt-tokens") -> list[int]:
    """``"1,2, 3"``, ``"1 2 3"`` or ``"[1, 2, 3]"`` → ``[1, 2, 3]`` (usage error otherwise)."""
    cleaned = text.strip().removeprefix("[").removesuffix("]")
    parts = [p for p in cleaned.replace(",", " ").split() if p]
    if not parts:
        raise click.BadParameter("no token ids given (e.g. 1,2,3)", param_hint=param)
    ids: list[int] = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise click.BadParameter(
                f"{part!r} is not a token id (use integers, e.g. 1,2,3)", param_hint=param
            ) from None
        if value < 0:
            raise click.BadParameter(f"token ids are >= 0, got {value}", param_hint=param)
        ids.append(value)
    return ids


def read_prompt_file(path: Path) -> tuple[str | None, list[int] | None]:
    """A prompt file holds plain text, a JSON list of token ids, or ``{"tokens": [...]}``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {str(path)!r}: {exc.strerror}", param_hint="--prompt-file"
        ) from None
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            return text, None
        tokens = data.get("tokens") if isinstance(data, dict) else data
        if isinstance(tokens, list) and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
        ):
            if not tokens:
                raise click.BadParameter("the token list is empty", param_hint="--prompt-file")
            return None, list(tokens)
    return text, None


@dataclass(frozen=True)
class ModelOptions:
    """Exactly one of ``--base-model`` and ``--model-path`` (a checked ``tinker://`` path)."""

    base_model: str | None
    model_path: str | None

    def __post_init__(self) -> None:
        if (self.base_model is None) == (self.model_path is None):
            raise click.UsageError(
                "give exactly one of --base-model NAME or --model-path tinker://..."
            )
        if self.model_path is not None:
            from tinkex_cli._cmd_checkpoint import parse_tinker_path

            path = str(parse_tinker_path(self.model_path, param="--model-path"))
            object.__setattr__(self, "model_path", path)

    @property
    def name(self) -> str:
        return self.base_model or self.model_path or ""

    def create_sampler(self, service: Any) -> Any:
        if self.model_path is not None:
            return service.create_sampling_client(model_path=self.model_path)
        return service.create_sampling_client(base_model=self.base_model)


model_options = option_group(
    "model",
    ModelOptions,
    click.option("--base-model", default=None, metavar="NAME", help="Sample from this base model."),
    click.option(
        "--model-path",
        default=None,
        metavar="TINKER_PATH",
        help="Sample from saved sampler weights: tinker://<run>/sampler_weights/<name>.",
    ),
)


@dataclass(frozen=True)
class PromptOptions:
    """Exactly one of the ``PROMPT`` argument, ``--prompt``, ``--prompt-tokens`` and
    ``--prompt-file``, read into ``text`` (to be tokenized) or ``tokens``."""

    prompt: str | None
    prompt_tokens: str | None
    prompt_file: Path | None
    prompt_text: str | None = None

    def __post_init__(self) -> None:
        if self.prompt_text is not None:
            if self.prompt is not None:
                raise click.UsageError("give the prompt once: as the PROMPT argument or with -p")
            object.__setattr__(self, "prompt", self.prompt_text)
        given = [x for x in (self.prompt, self.prompt_tokens, self.prompt_file) if x is not None]
        if len(given) != 1:
            raise click.UsageError(
                "give exactly one of --prompt TEXT (or the PROMPT argument), "
                "--prompt-tokens IDS or --prompt-file FILE"
            )
        if self.prompt is not None and not self.prompt:
            raise click.BadParameter("the prompt is empty", param_hint="--prompt")

    def read(self) -> tuple[str | None, list[int] | None]:
        """``(text, None)`` or ``(None, token ids)``."""
        if self.prompt_tokens is not None:
            return None, parse_token_ids(self.prompt_tokens)
        if self.prompt_file is not None:
            text, ids = read_prompt_file(self.prompt_file)
            if text is not None and not text:
                raise click.BadParameter("the prompt is empty", param_hint="--prompt")
            return text, ids
        return self.prompt, None


prompt_options = option_group(
    "prompt",
    PromptOptions,
    click.argument("prompt_text", required=False, default=None, metavar="[PROMPT]"),
    click.option(
        "-p",
        "--prompt",
        default=None,
        metavar="TEXT",
        help="Prompt text (tokenized with the model's tokenizer); same as the PROMPT argument.",
    ),
    click.option(
        "--prompt-tokens", default=None, metavar="IDS", help="Prompt token ids, e.g. 1,2,3."
    ),
    click.option(
        "--prompt-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help='File with the prompt: text, a JSON list of token ids, or {"tokens": [...]}.',
    ),
)


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling parameters and the number of samples; stop strings and stop token ids
    exclude each other."""

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int | None
    stop_strings: tuple[str, ...]
    stop_tokens: tuple[int, ...]
    num_samples: int

    def __post_init__(self) -> None:
        if self.stop_strings and self.stop_tokens:
            raise click.UsageError("use either --stop or --stop-token, not both")

    def params(self) -> SamplingParams:
        from tinkex_types import SamplingParams

        stop: list[str] | list[int] | None = None
        if self.stop_strings:
            stop = list(self.stop_strings)
        elif self.stop_tokens:
            stop = list(self.stop_tokens)
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
        )


sampling_options = option_group(
    "sampling",
    SamplingOptions,
    click.option(
        "--max-tokens",
        type=click.IntRange(min=1),
        default=32,
        show_default=True,
        help="Tokens to generate per sample.",
    ),
    click.option("--temperature", type=click.FloatRange(min=0.0), default=1.0, show_default=True),
    click.option(
        "--top-k", type=click.IntRange(min=-1), default=-1, show_default=True, help="-1: off."
    ),
    click.option(
        "--top-p",
        type=click.FloatRange(min=0.0, max=1.0, min_open=True),
        default=1.0,
        show_default=True,
    ),
    click.option("--seed", type=int, default=None, help="Random seed (same seed, same samples)."),
    click.option(
        "--stop", "stop_strings", multiple=True, metavar="TEXT", help="Stop string (repeatable)."
    ),
    click.option(
        "--stop-token",
        "stop_tokens",
        multiple=True,
        type=click.IntRange(min=0),
        metavar="ID",
        help="Stop token id (repeatable).",
    ),
    click.option("-n", "--num-samples", type=click.IntRange(min=1), default=1, show_default=True),
)


@dataclass(frozen=True)
class DisplayOptions:
    """What is printed besides the text (``prompt_logprobs`` is also asked of the server)."""

    show_tokens: bool
    show_logprobs: bool
    prompt_logprobs: bool


display_options = option_group(
    "display",
    DisplayOptions,
    click.option("--show-tokens", is_flag=True, help="Also print the sampled token ids."),
    click.option(
        "--show-logprobs", is_flag=True, help="Also print the logprob of each sampled token."
    ),
    click.option(
        "--prompt-logprobs", is_flag=True, help="Ask for (and print) the prompt's logprobs."
    ),
)
