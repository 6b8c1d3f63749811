"""Settings come from upper-case environment variables and are validated at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.config import GROUPS, Settings
from service.core.model_card import card_path_for
from service.core.settings_reference import reference_markdown


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("https://lab.example", ["https://lab.example"]),
        ("https://a.example,https://b.example", ["https://a.example", "https://b.example"]),
        (" https://a.example , https://b.example ,, ", ["https://a.example", "https://b.example"]),
        ("", []),
    ],
)
def test_cors_origins_are_read_from_a_comma_separated_env_var(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", value)
    assert Settings().cors_origins == origins


def test_settings_default_to_no_cors_origin_and_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORS_ORIGINS", raising=False)
    monkeypatch.delenv("API_KEY", raising=False)
    settings = Settings()
    assert settings.cors_origins == []
    assert settings.api_key is None


def test_an_empty_api_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "")
    assert Settings().api_key is None


def test_the_api_key_is_kept_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "s3cret-key")
    settings = Settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "s3cret-key"
    assert "s3cret-key" not in repr(settings)


def test_settings_read_typed_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", "/srv/models/cells.onnx")
    monkeypatch.setenv("MAX_BATCH_WAIT_S", "0.0025")
    monkeypatch.setenv("ORT_CPU_MEM_ARENA", "false")
    settings = Settings()
    assert settings.model_path == Path("/srv/models/cells.onnx")
    assert card_path_for(settings.model_path) == Path("/srv/models/cells.json")
    assert settings.max_batch_wait_s == 0.0025
    assert settings.ort_cpu_mem_arena is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_WAIT_S", "-1"),
        ("DECODE_THREADS", "-2"),
        ("MAX_PIXELS", "some"),
        ("MAX_QUEUE_IMAGES", "0"),
        ("MAX_FILES", "many"),
        ("LOG_LEVEL", "verbose"),
        ("REQUEST_TIMEOUT_S", "0"),
    ],
)
def test_settings_refuse_invalid_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_a_renamed_setting_is_refused_with_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_WAIT_MS", "5")
    with pytest.raises(ValidationError, match=r"MAX_BATCH_WAIT_MS is no longer read: set MAX_BATCH_WAIT_S"):
        Settings()


@pytest.mark.parametrize("name", ["DECODE_THREADS", "ORT_INTRA_OP_THREADS", "MAX_PIXELS", "DECODE_MEMORY_BUDGET_BYTES"])
@pytest.mark.parametrize("value", ["auto", "", "0"])
def test_auto_lets_the_service_size_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(Settings(), name.lower()) is None


def test_every_setting_belongs_to_exactly_one_group() -> None:
    grouped = [name for group in GROUPS for name in group.model_fields]
    assert sorted(grouped) == sorted(Settings.model_fields)
    assert len(grouped) == len(set(grouped))


def test_the_configuration_reference_is_the_one_the_settings_write() -> None:
    written = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert written == reference_markdown(), "docs/configuration.md is stale: python -m service.core.settings_reference"


def test_the_server_listens_on_this_machine_only_unless_host_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    assert Settings().host == "127.0.0.1"
    monkeypatch.setenv("HOST", "0.0.0.0")
    assert Settings().host == "0.0.0.0"


def test_the_image_listens_on_every_interface_because_its_port_is_published() -> None:
    dockerfile = (Path(__file__).parents[2] / "Dockerfile").read_text()
    assert "HOST=0.0.0.0" in dockerfile


def test_the_default_model_is_the_installed_package_s_from_any_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MODEL_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    path = Settings().model_path
    assert path.is_absolute()
    assert path == Path(__file__).resolve().parents[2] / "models" / "model.onnx"
    assert path.is_file()
