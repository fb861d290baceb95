"""Find installed OpenKIM portable models and describe them as potentials_db entries.

Metadata the KIM-API does not expose offline (citation, ML or not, what the
model was fitted to) is inferred from the OpenKIM naming scheme
``<Driver>_<Authors>_<Year>[vN]_<Species>__MO_<12 digits>_<version>`` and
from the known list of machine-learned drivers; check the written entries.

:func:`discover_installed` reads the species and influence distance of every
installed portable model. Reading them loads each model (about 6 s for the
441 models of Debian's ``openkim-models``), so they are cached per model in
``$EIP2NN_CACHE_DIR/openkim/portable_models.json`` (default root
``~/.cache/eip2nn/data``, as for downloads), keyed by the KIM-API version and
each model library's path, size and modification time: a model installed,
removed or updated is read again, the others are not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from eip2nn.potentials.spec import DISCOVERED_SOURCE, PotentialSpec, PotentialSpecError, spec_from_dict

# Drivers/prefixes of machine-learned or fitted-to-benchmark models.
ML_PREFIXES = ("SNAP_", "DUNN_", "GAP_", "ANN_", "MTP_", "NequIP_", "hNN_", "TorchML_",
               "ACE_", "MACE_", "Allegro_")
# Models fitted to the mlearn benchmark (Zuo et al. 2020), or machine-learned by the same
# group on DFT data of the same kind (possible overlap): excluded from labelling mlearn.
FITTED_TO = {"SNAP_ZuoChenLi_2019": ("mlearn",), "SNAP_ZuoChenLi_2019quadratic": ("mlearn",),
             "SNAP_LiHuChen_2018": ("mlearn",), "SNAP_ChenDengTran_2017": ("mlearn",),
             "SNAP_LiChenZheng_2019": ("mlearn",)}
MAX_SPECIES = 20  # "universal" models listing every element are not element-specific EIPs

CACHE_DIR_ENV = "EIP2NN_CACHE_DIR"  # the cache root of eip2nn.data.registry.cache_dir
DEFAULT_CACHE_DIR = Path("~/.cache/eip2nn/data")
CACHE_FORMAT = 1  # bump when the cached entries change meaning

_NAME = re.compile(r"^(?P<prefix>.+?)_(?P<species>[A-Za-z]+)__MO_(?P<digits>\d{12})_(?P<ver>\d{3})$")
_ARCHIVE_ID = re.compile(r"^.+__MO_\d{12}_\d{3}$")


@dataclass(frozen=True)
class KIMModelInfo:
    model: str  # full OpenKIM id
    species: tuple[str, ...]
    cutoff: float  # Å, the model's influence distance


@dataclass
class Discovery:
    """What :func:`discover_installed` found."""

    models: list[KIMModelInfo]  # every portable model that could be read, in name order
    failures: list[tuple[str, str]] = field(default_factory=list)  # (model, or "KIM-API", reason)
    loaded: int = 0  # models loaded by this call; 0 when the cache knew them all
    cache_file: Path | None = None


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


def metadata_cache_file() -> Path:
    """The model metadata cache: ``<$EIP2NN_CACHE_DIR or ~/.cache/eip2nn/data>/openkim/portable_models.json``."""
    root = Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()
    return root / "openkim" / "portable_models.json"


def discover_installed(cache_file: str | Path | None = None) -> Discovery:
    """Species and cut-off of every installed portable model, from the cache where it is current.

    A model that cannot be listed or loaded is a failure (model, reason); a
    missing kimpy is one failure named "KIM-API". Failures to load are cached
    too (delete the cache file to retry them).
    """
    try:
        import kimpy
    except ImportError as e:
        return Discovery([], [("KIM-API", f"kimpy is not importable ({e}): installed OpenKIM models "
                                          "are not discovered")])
    cache_file = Path(cache_file) if cache_file is not None else metadata_cache_file()
    version = _kim_api_version(kimpy)
    installed, failures = _installed_signatures(kimpy)
    cached = _read_cache(cache_file, version)
    entries = {n: cached[n] for n, sig in installed.items() if cached.get(n, {}).get("signature") == sig}
    todo = [n for n in installed if n not in entries]
    for name, entry in _load_in_subprocess(todo).items():
        entries[name] = {**entry, "signature": installed[name]}
    if todo or set(cached) != set(entries):
        _write_cache(cache_file, version, entries)
    models = []
    for name in sorted(entries):
        e = entries[name]
        if "error" in e:
            failures.append((name, e["error"]))
        else:
            models.append(KIMModelInfo(name, tuple(e["species"]), float(e["cutoff"])))
    return Discovery(models, sorted(failures), len(todo), cache_file)


def _kim_api_version(kimpy) -> str:
    try:
        return " ".join(map(str, kimpy.collections.create().get_project_name_and_sem_ver()))
    except Exception as e:  # an old kimpy without it: the model files' signatures still key the cache
        return f"unknown ({type(e).__name__})"


def _installed_signatures(kimpy) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{model: "library path|size|mtime_ns"} for every installed portable model, and the unlistable ones."""
    col = kimpy.collections.create()
    kind = kimpy.collection_item_type.portableModel
    out, failures = {}, []
    for name in installed_portable_models():
        try:
            library, _ = col.get_item_library_file_name_and_collection(kind, name)
            st = os.stat(library)
            out[name] = f"{os.path.normpath(library)}|{st.st_size}|{st.st_mtime_ns}"
        except Exception as e:  # recorded with its reason
            failures.append((name, f"library file not found: {type(e).__name__}: {e}"))
    return out, failures


def _read_cache(path: Path, version: str) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("kim_api") != version:
        return {}
    models = data.get("models")
    if not isinstance(models, dict):
        return {}
    return {n: e for n, e in models.items()  # an entry not written by this version is read again
            if isinstance(e, dict) and "signature" in e and ("error" in e or {"species", "cutoff"} <= set(e))}


def _write_cache(path: Path, version: str, entries: dict[str, dict]) -> None:
    """Write atomically; a cache that cannot be written only costs the next call its speed."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": CACHE_FORMAT, "kim_api": version, "models": entries}, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"could not write the OpenKIM model cache {path}: {e}; models are loaded again next time",
                      RuntimeWarning, stacklevel=3)


def _load_in_subprocess(names: list[str]) -> dict[str, dict]:
    """{model: {"species", "cutoff"} or {"error"}} for ``names``, each loaded by a child process.

    The child keeps the drivers' banners off our stdout (Fortran buffers them
    until exit) and a model that crashes or hangs it from taking us down: that
    model is recorded as a failure and the child restarted for the rest.
    """
    results: dict[str, dict] = {}
    remaining = list(names)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory(prefix="eip2nn-kim-") as tmp:
        out = Path(tmp) / "models.jsonl"
        while remaining:
            with open(Path(tmp) / "stderr.txt", "w+") as err:
                proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
                proc.stdin.write(json.dumps(remaining))
                proc.stdin.close()
                hung = _wait_while_progressing(proc, out)
                err.seek(0)
                tail = err.read()[-400:].strip()
            for line in out.read_text().splitlines() if out.exists() else []:
                entry = json.loads(line)
                results[entry.pop("model")] = entry
            remaining = [n for n in remaining if n not in results]
            if remaining:  # the child stopped on remaining[0]
                why = (f"loading it hung the loader for {MODEL_LOAD_TIMEOUT_S:g} s" if hung
                       else f"loading it ended the loader process (exit status {proc.returncode})")
                results[remaining.pop(0)] = {"error": f"{why}{': ' + tail if tail else ''}"}
    return results


MODEL_LOAD_TIMEOUT_S = 120.0  # one model taking longer to load is recorded as hanging
_CHILD = """
import json, sys
import kimpy
from eip2nn.potentials.discover import model_info
kimpy.log.Log.push_default_verbosity(kimpy.log_verbosity.error)
with open(sys.argv[1], "a") as out:
    for name in json.loads(sys.stdin.read()):
        try:
            info = model_info(name)
            entry = {"species": list(info.species), "cutoff": info.cutoff}
        except Exception as e:
            entry = {"error": f"{type(e).__name__}: {e}".strip()}
        out.write(json.dumps({"model": name, **entry}) + "\\n")
        out.flush()
"""


def _wait_while_progressing(proc: subprocess.Popen, out: Path) -> bool:
    """Wait for ``proc``; kill it if ``out`` has not grown for MODEL_LOAD_TIMEOUT_S. True if killed."""
    size, since = -1, time.monotonic()
    while proc.poll() is None:
        time.sleep(0.05)
        now_size = out.stat().st_size if out.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since > MODEL_LOAD_TIMEOUT_S:
            proc.kill()
            proc.wait()
            return True
    return False


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
    """Installed portable models that support every element in ``species`` (loads them; no cache).

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
    m = _NAME.match(info.model)
    prefix = m.group("prefix") if m else short_id(info.model)
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


def unusable(info: KIMModelInfo) -> str | None:
    """Why an installed model is not an element-specific EIP to discover, or None if it is one."""
    from ase.data import chemical_symbols
    if not _ARCHIVE_ID.match(info.model):
        return ("not an OpenKIM archive id (<name>__MO_<12 digits>_<version>): a KIM-API example or a "
                "private model, with no citation; write a potentials_db entry to use it")
    if len(info.species) > MAX_SPECIES:
        return f"lists {len(info.species)} species (over {MAX_SPECIES}): a generic model, not element-specific"
    bad = [s for s in info.species if s not in chemical_symbols[1:]]
    if bad:
        return f"species {bad} are not element symbols"
    return None


def discovered_specs(models: list[KIMModelInfo], registered: dict[str, PotentialSpec]
                     ) -> tuple[dict[str, PotentialSpec], list[tuple[str, str]]]:
    """potentials_db-like specs for installed models that no registered entry describes.

    Returns ({id: spec}, [(model, why it is left out)]). A registered entry for
    the same KIM model wins (it carries known issues, fitted_to tags, notes).
    The id is :func:`short_id`, or the full OpenKIM id where two installed
    models (or a registered entry) share that short id.
    """
    kim_registered = {s.backend.model for s in registered.values() if s.backend_type == "kim"}
    usable, skipped = [], []
    for info in models:
        if info.model in kim_registered:
            continue
        why = unusable(info)
        if why:
            skipped.append((info.model, why))
        else:
            usable.append(info)
    counts: dict[str, int] = {}
    for info in usable:
        counts[short_id(info.model)] = counts.get(short_id(info.model), 0) + 1
    out: dict[str, PotentialSpec] = {}
    for info in usable:
        sid = short_id(info.model)
        eip_id = sid if counts[sid] == 1 and sid not in registered else info.model
        try:
            out[eip_id] = spec_from_dict({**spec_dict(info), "id": eip_id}, source=DISCOVERED_SOURCE)
        except PotentialSpecError as e:
            skipped.append((info.model, str(e)))
    return out, skipped
