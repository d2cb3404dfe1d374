"""A server whose save paths have another shape (``tinkex serve --path-style two-part``
issues ``tinker://<run>/<name>``): the client passes them through as given, so sampling,
weights info and the REST calls work on the paths the server returned."""

from __future__ import annotations

from pathlib import Path

from tinkex_clients import ServiceClient
from tinkex_types import Hooks, ModelInput, SamplingParams

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"


def test_sampling_from_a_two_part_path(tmp_path: Path, local_hooks: Hooks) -> None:
    from tinkex_server._config import ServerConfig
    from tinkex_server._local import LocalTransport, get_local_server

    server = get_local_server(config=ServerConfig(data_dir=tmp_path, path_style="two-part"))
    service = ServiceClient(
        base_url="local://",
        transport=LocalTransport(server),
        hooks=local_hooks,
        poll_policy=FAST_POLLS,
    )
    try:
        training = service.create_lora_training_client(MODEL, rank=2, seed=0)
        path = training.save_weights_for_sampler("two").result().path
        run, _, rest = path.removeprefix("tinker://").partition("/")
        assert (run, rest) == (training.model_id, "two"), path  # two parts, as issued

        sampler = service.create_sampling_client(model_path=path)
        prompt = ModelInput.from_ints([1, 2, 3])
        params = SamplingParams(max_tokens=3, seed=7, temperature=0.0)
        result = sampler.sample(prompt, num_samples=1, sampling_params=params).result()
        assert len(result.sequences[0].tokens) == 3

        rest_client = service.create_rest_client()
        info = rest_client.get_weights_info_by_tinker_path(path).result()
        assert info.base_model == MODEL
    finally:
        service.close()
        server.close()
