"""Find installed OpenKIM portable models and describe them as potentials_db entries.

Metadata the KIM-API does not expose offline (citation, ML or not, what the
model was fitted to) is inferred from the OpenKIM naming scheme
``<Driver>_<Authors>_<Year>[vN]_<Species>__MO_<12 digits>_<version>`` and
from the known list of machine-learned drivers; check the written entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Drivers/prefixes of machine-learned or fitted-to-benchmark models.
ML_PREFIXES = ("SNAP_", "DUNN_", "GAP_", "ANN_", "MTP_", "NequIP_", "hNN_", "TorchML_")
# Models fitted to the mlearn benchmark (Zuo et al. 2020), or machine-learned by the same
# group on DFT data of the same kind (possible overlap): excluded from labelling mlearn.
FITTED_TO = {"SNAP_ZuoChenLi_2019": ("mlearn",), "SNAP_ZuoChenLi_2019quadratic": ("mlearn",),
             "SNAP_LiHuChen_2018": ("mlearn",), "SNAP_ChenDengTran_2017": ("mlearn",),
             "SNAP_LiChenZheng_2019": ("mlearn",)}
MAX_SPECIES = 20  # "universal" models listing every element are not element-specific EIPs

_NAME = re.compile(r"^(?P<prefix>.+?)_(?P<species>[A-Za-z]+)__MO_(?P<digits>\d{12})_(?P<ver>\d{3})$")


@dataclass(frozen=True)
class KIMModelInfo:
    model: str  # full OpenKIM id
    species: tuple[str, ...]
    cutoff: float  # Å, the model's influence distance


def installed_portable_models() -> list[str]:
    """Names of every KIM portable model the KIM-API can find here."""
    import kimpy
    col = kimpy.collections.create()
    n = col.cache_list_of_item_names_by_type(kimpy.collection_item_type.portableModel)
    names = [col.get_item_name_by_type(i) for i in range(n)]
    return sorted(names)


def model_info(model: str) -> KIMModelInfo:
    """Species and cut-off of an installed portable model (loads it)."""
    from ase.calculators.kim.kimpy_wrappers import PortableModel
    with PortableModel(model, debug=False) as pm:
        species, _ = pm.get_model_supported_species_and_codes()
        cutoff = pm.get_influence_distance()
    return KIMModelInfo(model, tuple(species), float(cutoff))


def species_from_name(model: str) -> tuple[str, ...]:
    """Element symbols encoded in an OpenKIM id (``..._SiC__MO_...`` -> Si, C); () if unparsable."""
    from ase.data import chemical_symbols
    m = _NAME.match(model)
    if not m:
        return ()
    text, out = m.group("species"), []
    while text:
        for n in (2, 1):
            if text[:n] in chemical_symbols[1:]:
                out.append(text[:n])
                text = text[n:]
                break
        else:
            return ()
    return tuple(out)


def find_models(species: list[str]) -> list[KIMModelInfo]:
    """Installed portable models that support every element in ``species``.

    Generic models listing more than MAX_SPECIES elements (universal LJ) are left out.
    """
    wanted = set(species)
    out = []
    for name in installed_portable_models():
        guess = species_from_name(name)
        if guess and not wanted <= set(guess):
            continue  # cheap pre-filter by name; confirmed below by loading
        info = model_info(name)
        if wanted <= set(info.species) and len(info.species) <= MAX_SPECIES:
            out.append(info)
    return out


def short_id(model: str) -> str:
    """potentials_db id of a KIM model: the OpenKIM id without ``__MO_<digits>_<version>``."""
    return model.split("__MO_")[0]


def spec_dict(info: KIMModelInfo) -> dict:
    """A potentials_db entry (as a dict) for a KIM portable model."""
    prefix = _NAME.match(info.model).group("prefix") if _NAME.match(info.model) else info.model
    parts = prefix.split("_")
    family = parts[0]
    year = next((p for p in parts if re.fullmatch(r"\d{4}\w*", p)), "")
    authors = parts[-2] if len(parts) >= 3 else ""
    authors = re.sub(r"(?<!^)(?=[A-Z])", ", ", authors)
    ml = info.model.startswith(ML_PREFIXES)
    fitted = next((v for k, v in FITTED_TO.items() if info.model.startswith(k + "_")), ())
    return {
        "id": short_id(info.model),
        "name": f"{family} {authors} {year} ({'/'.join(info.species)}), OpenKIM".replace("  ", " "),
        "species": list(info.species),
        "kind": "machine-learned" if ml else "empirical",
        "family": family,
        "backend": {"type": "kim", "model": info.model},
        "cutoff": round(info.cutoff, 6),
        "citation": f"{authors} ({year[:4]}); OpenKIM model {info.model}, "
                    f"https://openkim.org/id/{info.model}",
        "fitted_to": list(fitted),
    }
