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


def test_pop_unregisters_and_rejects_unknown_names():
    reg: Registry = Registry("dataset")
    reg.add("squares", 1)
    assert reg.pop("squares") == 1 and "squares" not in reg
    with pytest.raises(UnknownNameError):
        reg.pop("squares")


def test_every_lookup_by_name_uses_one_registry_shape():
    from deepobfuscator.cli import COMMAND_MODULES
    from deepobfuscator.config import ConfigError, PRESETS, preset
    from deepobfuscator.data import LOADERS, DataError, load_index
    from deepobfuscator.methods import METHODS, get_method
    from deepobfuscator.models import CLASSIFIERS, RECONSTRUCTORS, build_reconstructor
    from deepobfuscator.text.config import TEXT_PRESETS, text_preset

    for reg in (COMMAND_MODULES, PRESETS, LOADERS, METHODS, CLASSIFIERS, RECONSTRUCTORS, TEXT_PRESETS):
        assert isinstance(reg, Registry) and len(reg) and reg.describe()
    with pytest.raises(ConfigError, match="did you mean 'noisy'"):
        get_method("noisey")
    with pytest.raises(ConfigError, match="did you mean 'demo'"):
        preset("dem")
    with pytest.raises(ConfigError, match="did you mean 'text-tiny'"):
        text_preset("text-tin")
    with pytest.raises(DataError, match="data.dataset: unknown dataset 'celeb'.*did you mean 'celeba'"):
        load_index("celeb", ".")
    with pytest.raises(UnknownNameError, match="did you mean 'mirror'"):
        build_reconstructor("miror", 8, (4, 4), (16, 16))
