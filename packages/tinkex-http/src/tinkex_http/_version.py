"""Version strings and well-known base URLs."""

from __future__ import annotations

__all__ = [
    "DEFAULT_BASE_URL",
    "LOCAL_BASE_URL",
    "SDK_VERSION",
    "__version__",
]

#: Version of the tinkex-http distribution (used in the ``User-Agent``).
__version__ = "0.1.0"

#: The JSON-generation SDK version tinkex reports on the wire (``sdk_version``,
#: ``X-Stainless-Package-Version``); protocol.md §1.2. Configurable via ``Config(sdk_version=)``.
SDK_VERSION = "0.16.1"

#: The official Tinker cloud service; the default when neither ``base_url`` nor
#: ``TINKER_BASE_URL`` is given.
DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"

#: The in-process local server (provided by the ``tinkex-server`` package's ``local``
#: transport); pass it explicitly: ``Config(base_url=LOCAL_BASE_URL)``.
LOCAL_BASE_URL = "local://"
