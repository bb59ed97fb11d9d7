"""Configuration errors never echo a URI's credentials."""

import pytest

from wsol.common.typed_config import ConfigError
from wsol.common.uri_secrets import masked_uri
from wsol.search.experiment import experiment_from_dict


@pytest.mark.parametrize(("uri", "masked"), [
    ("s3://AKIAKEY:s3cr3t@bucket/p", "s3://***@bucket/p"),
    ("http://alice:pw@host:5000", "http://***@host:5000"),
    ("s3://bucket/p?secret_key=s3cr3t&region=x", "s3://bucket/p?secret_key=***&region=x"),
    ("postgresql://alice:pw@db/wsol", "postgresql://***@db/wsol"),
])
def test_credentials_are_masked(uri: str, masked: str) -> None:
    assert masked_uri(uri) == masked


def test_uris_without_credentials_are_left_alone() -> None:
    assert masked_uri("s3://bucket/prefix") is None
    assert masked_uri("postgresql://alice@db/wsol") is None  # a user name is no secret


def test_a_rejected_data_root_is_shown_without_its_secret() -> None:
    with pytest.raises(ConfigError) as error:
        experiment_from_dict({"dataset": "cub", "data_root": "s3://AKIAKEY:s3cr3t@bucket/p"})
    assert "s3cr3t" not in str(error.value) and "AKIAKEY" not in str(error.value)
    assert "data_root" in str(error.value)
