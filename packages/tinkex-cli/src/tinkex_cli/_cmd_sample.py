"""``tinkex sample``: sample completions from a base model or a saved checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import structlog

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import CLIError, ExitCode
from tinkex_cli._output import Output
from tinkex_cli._paging import resolve
from tinkex_types import TinkexError

_log = structlog.get_logger("tinkex.cli")

__all__ = ["parse_token_ids", "sample_command"]


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


def _read_prompt_file(path: Path) -> tuple[str | None, list[int] | None]:
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


def _tokenizer_for(sampler: Any) -> Any:
    """The sampler's tokenizer (resolved through the ``tinkex_resolve_tokenizer`` hook), or
    ``None`` when no plugin knows the model's tokenizer."""
    try:
        return sampler.get_tokenizer()
    except (TinkexError, LookupError, ImportError, OSError) as exc:
        _log.info("no_tokenizer", error=str(exc))
        return None


@click.command("sample")
@click.option("--base-model", default=None, metavar="NAME", help="Sample from this base model.")
@click.option(
    "--model-path",
    default=None,
    metavar="TINKER_PATH",
    help="Sample from saved sampler weights: tinker://<run>/sampler_weights/<name>.",
)
@click.option(
    "-p",
    "--prompt",
    default=None,
    metavar="TEXT",
    help="Prompt text (tokenized with the model's tokenizer).",
)
@click.option("--prompt-tokens", default=None, metavar="IDS", help="Prompt token ids, e.g. 1,2,3.")
@click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='File with the prompt: text, a JSON list of token ids, or {"tokens": [...]}.',
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Tokens to generate per sample.",
)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
@click.option(
    "--top-k", type=click.IntRange(min=-1), default=-1, show_default=True, help="-1: off."
)
@click.option(
    "--top-p",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=1.0,
    show_default=True,
)
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same samples).")
@click.option(
    "--stop", "stop_strings", multiple=True, metavar="TEXT", help="Stop string (repeatable)."
)
@click.option(
    "--stop-token",
    "stop_tokens",
    multiple=True,
    type=click.IntRange(min=0),
    metavar="ID",
    help="Stop token id (repeatable).",
)
@click.option("-n", "--num-samples", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--show-tokens", is_flag=True, help="Also print the sampled token ids.")
@click.option("--show-logprobs", is_flag=True, help="Also print the logprob of each sampled token.")
@click.option("--prompt-logprobs", is_flag=True, help="Ask for (and print) the prompt's logprobs.")
@format_option
@pass_state
def sample_command(
    state: CLIState,
    base_model: str | None,
    model_path: str | None,
    prompt: str | None,
    prompt_tokens: str | None,
    prompt_file: Path | None,
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    stop_strings: tuple[str, ...],
    stop_tokens: tuple[int, ...],
    num_samples: int,
    show_tokens: bool,
    show_logprobs: bool,
    prompt_logprobs: bool,
) -> None:
    """Sample from a base model (--base-model) or from saved weights (--model-path).

    \b
    tinkex --base-url local:// sample --base-model tinkex/tiny-qwen3 -p "Hello" -n 2
    tinkex sample --model-path tinker://RUN/sampler_weights/final --prompt-tokens 1,2,3
    """
    from tinkex_types import ModelInput, SamplingParams

    if (base_model is None) == (model_path is None):
        raise click.UsageError("give exactly one of --base-model NAME or --model-path tinker://...")
    if model_path is not None:
        from tinkex_cli._cmd_checkpoint import parse_tinker_path

        model_path = str(parse_tinker_path(model_path, param="--model-path"))
    given = [x for x in (prompt, prompt_tokens, prompt_file) if x is not None]
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one of --prompt TEXT, --prompt-tokens IDS or --prompt-file FILE"
        )
    if stop_strings and stop_tokens:
        raise click.UsageError("use either --stop or --stop-token, not both")

    text: str | None = prompt
    ids: list[int] | None = None
    if prompt_tokens is not None:
        ids = parse_token_ids(prompt_tokens)
    elif prompt_file is not None:
        text, ids = _read_prompt_file(prompt_file)
    if text is not None and not text:
        raise click.BadParameter("the prompt is empty", param_hint="--prompt")

    stop: list[str] | list[int] | None = None
    if stop_strings:
        stop = list(stop_strings)
    elif stop_tokens:
        stop = list(stop_tokens)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop=stop,
    )

    service = state.service_client()
    if model_path is not None:
        sampler = service.create_sampling_client(model_path=model_path)
    else:
        sampler = service.create_sampling_client(base_model=base_model)
    tokenizer = _tokenizer_for(sampler)
    if ids is None:
        if tokenizer is None:
            raise CLIError(
                f"no tokenizer found for {base_model or model_path}; give --prompt-tokens instead",
                ExitCode.USAGE,
            )
        ids = list(tokenizer.encode(text or ""))
    response = resolve(
        sampler.sample(
            prompt=ModelInput.from_ints(ids),
            num_samples=num_samples,
            sampling_params=params,
            include_prompt_logprobs=prompt_logprobs,
        )
    )

    samples: list[dict[str, Any]] = []
    for i, seq in enumerate(response.sequences):
        decoded = tokenizer.decode(seq.tokens) if tokenizer is not None else None
        logprobs = list(seq.logprobs) if seq.logprobs is not None else None
        mean = sum(logprobs) / len(logprobs) if logprobs else None
        samples.append(
            {
                "index": i,
                "text": decoded,
                "tokens": list(seq.tokens),
                "logprobs": logprobs,
                "mean_logprob": mean,
                "stop_reason": str(seq.stop_reason),
            }
        )
    doc = {
        "base_model": base_model,
        "model_path": model_path,
        "prompt_tokens": ids,
        "sampling_params": params.model_dump(mode="json"),
        "samples": samples,
        "prompt_logprobs": response.prompt_logprobs if prompt_logprobs else None,
    }

    def render(out: Output) -> None:
        if prompt_logprobs and response.prompt_logprobs is not None:
            out.line("Prompt logprobs: " + _fmt_floats(response.prompt_logprobs))
        for s in samples:
            mean = s["mean_logprob"]
            detail = f"stop: {s['stop_reason']}, {len(s['tokens'])} tokens"
            if mean is not None:
                detail += f", mean logprob {mean:.3f}"
            out.line(f"Sample {s['index'] + 1} ({detail}):")
            out.line(s["text"] if s["text"] is not None else "(no tokenizer: text not decoded)")
            if show_tokens:
                out.line("tokens: " + json.dumps(s["tokens"]))
            if show_logprobs:
                out.line("logprobs: " + _fmt_floats(s["logprobs"]))
            out.line()

    state.output.emit(doc, render)


def _fmt_floats(values: list[float | None] | None) -> str:
    if values is None:
        return "(none)"
    return (
        "["
        + ", ".join("null" if v is None or not math.isfinite(v) else f"{v:.4f}" for v in values)
        + "]"
    )
