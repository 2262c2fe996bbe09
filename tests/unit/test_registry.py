"""The one registry shape: lookup, did-you-mean errors, duplicate protection, listing."""
import pytest

from deepobfuscator.registry import Registry, UnknownNameError


def test_lookup_listing_and_did_you_mean():
    reg: Registry = Registry("method")

    @reg.register("encoder")
    def encoder():
        """O+C without privacy."""

    reg.add("noisy", object(), "Gaussian pixel noise")
    assert reg.get("encoder") is encoder
    assert reg.names() == ["encoder", "noisy"]
    assert "encoder" in reg and len(reg) == 2
    assert reg.describe().splitlines() == ["encoder: O+C without privacy.", "noisy: Gaussian pixel noise"]
    with pytest.raises(UnknownNameError, match="did you mean 'encoder'"):
        reg.get("encodr")
    with pytest.raises(KeyError, match="unknown method 'zzz' \\(known: encoder, noisy\\)$"):
        reg.get("zzz")


def test_duplicate_names_need_replace():
    reg: Registry = Registry("attacker")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    reg.add("a", 3, replace=True)
    assert reg.get("a") == 3
    with pytest.raises(ValueError):
        reg.add("", 4)
