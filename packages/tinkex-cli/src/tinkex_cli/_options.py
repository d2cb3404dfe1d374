"""Option groups: several click options handed to a command as one dataclass.

A command with many options reads better when related options arrive together, checked
together: ``@option_group("prompt", PromptOptions, click.option("--prompt"), ...)`` gives
the command one ``prompt: PromptOptions`` argument instead of one argument per option.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["option_group"]

F = TypeVar("F", bound=Callable[..., Any])


def option_group(
    dest: str, cls: type[Any], *options: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Callable[[F], F]:
    """Apply ``options`` (click option decorators, in the order ``--help`` shows them) and
    pass the command ``dest=cls(**values)`` in their place.

    ``cls`` is a dataclass whose field names are the options' parameter names; its
    ``__post_init__`` may check the combination (raise ``click.UsageError``).
    """
    names = [f.name for f in dataclasses.fields(cls)]

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            kwargs[dest] = cls(**values)
            return command(*args, **kwargs)

        decorated: Callable[..., Any] = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[return-value]

    return decorate
