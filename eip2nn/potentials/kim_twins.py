"""LAMMPS twins of OpenKIM EAM, spline-MEAM and Stillinger-Weber models, made from the model's own parameter file.

An OpenKIM portable model built on the ``EAM_Dynamo`` driver is a tabulated EAM
file (setfl or Finnis–Sinclair) run by a port of LAMMPS's ``pair_style eam``:
the same file under ``eam/alloy`` (or ``eam/fs``) is the same potential. One
built on ``MEAM_LAMMPS`` with a ``*.meam.spline`` file is LAMMPS's
``meam/spline`` ported, and the file runs there (tests/test_lammps_deploy.py:
agreement to ~1e-13 eV/atom and eV/Å on mlearn Ni, Cu and Mo). One built on
the ``SW`` driver keeps the Stillinger-Weber parameters with four of them
premultiplied (A·ε, λ·ε, γ·σ, a·σ, as its file says); with ε = 1 eV they
convert exactly to a LAMMPS ``sw`` file (agreement ~1e-13 on mlearn Si). One
built on ``EAM_CubicNaturalSpline`` reads a setfl (or Finnis–Sinclair) file
and interpolates it with natural cubic splines where LAMMPS uses its own
cubic pieces: on the finely tabulated installed models the two agree to
~1e-11 eV/Å (Angelo–Moody–Baskes Ni, 5001 knots), so the file runs under
``eam/alloy`` (``eam/fs``); a coarsely tabulated one would differ more. The installed
model library carries the file: the KIM-API's build
embeds it and describes it in the library's ``kim_shared_library_schema``
(version 2: item name, driver name, and each parameter file's name, length
and bytes). :func:`file_twin` reads that record through the library itself
(ctypes), so no file is guessed or downloaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
from pathlib import Path

from eip2nn.potentials.spec import KIMBackend, LAMMPSBackend, PotentialSpec

TWIN_SUFFIX = ":lammps"  # a twin's id: the OpenKIM entry's id and this
EAM_DRIVER = "EAM_Dynamo__"  # the OpenKIM driver of tabulated EAM files (its id's prefix)
MEAM_DRIVER = "MEAM_LAMMPS__"  # the OpenKIM port of LAMMPS's meam and meam/spline
SW_DRIVER = "SW__"  # OpenKIM's Stillinger-Weber driver: its parameters convert to a LAMMPS sw file
SPLINE_EAM_DRIVER = "EAM_CubicNaturalSpline__"  # setfl/FS files read with natural cubic splines
# the file's name ends in one of these: the LAMMPS style that reads it (funcfl files, .eam, are not twinned)
STYLE_OF_SUFFIX = ((".eam.fs", "eam/fs"), (".fs", "eam/fs"), (".eam.alloy", "eam/alloy"), (".alloy", "eam/alloy"),
                   (".setfl", "eam/alloy"), (".set", "eam/alloy"))


class _EmbeddedFile(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("length", ctypes.c_uint), ("data", ctypes.POINTER(ctypes.c_ubyte))]


class _SchemaV2(ctypes.Structure):
    """KIM-API's KIM_SharedLibrarySchemaV2 (kim-api 2.x: KIM_SharedLibrarySchema.h)."""

    _fields_ = [("item_type", ctypes.c_int), ("item_name", ctypes.c_char_p), ("create_language", ctypes.c_int),
                ("create_routine", ctypes.c_void_p), ("driver_name", ctypes.c_char_p),
                ("simulator_model_file", ctypes.POINTER(_EmbeddedFile)),
                ("n_parameter_files", ctypes.c_int), ("parameter_files", ctypes.POINTER(_EmbeddedFile)),
                ("n_metadata_files", ctypes.c_int), ("metadata_files", ctypes.POINTER(_EmbeddedFile))]


@dataclasses.dataclass(frozen=True)
class FileTwin:
    """What a LAMMPS run of an OpenKIM model needs: its style and its parameter file's bytes (for SW, the
    model's parameters rewritten in LAMMPS's sw form)."""

    kim_id: str  # the eip2nn id of the OpenKIM entry
    pair_style: str  # "eam/alloy", "eam/fs", "meam/spline" or "sw"
    file_name: str  # a name for the file: <kim_id>.<eam.alloy|eam.fs|meam.spline|sw>
    content: bytes

    def write(self, folder: Path) -> PotentialSpec:
        """Write the parameter file into ``folder``; the LAMMPS spec that reads it (its elements as the KIM
        entry's)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = (folder / self.file_name).resolve()
        path.write_bytes(self.content)
        return twin_spec(self.kim_id, self.pair_style, path)


def twin_spec(kim_id: str, pair_style: str, path: Path, species: tuple[str, ...] = ()) -> PotentialSpec:
    """The LAMMPS spec that runs OpenKIM entry ``kim_id``'s own parameter file, at ``path``, under ``pair_style``."""
    return PotentialSpec(
        id=kim_id + TWIN_SUFFIX, name=f"{kim_id}, its own file under pair_style {pair_style}",
        species=species, kind="empirical", family=pair_style.split("/")[0].upper(),
        backend=LAMMPSBackend(pair_style, f"* * {path} {{elements}}"), cutoff=0.0,
        citation=f"the parameter file of OpenKIM model {kim_id}", source_file=str(path))


def file_twin(spec: PotentialSpec) -> FileTwin:
    """The LAMMPS twin of OpenKIM entry ``spec``; ValueError saying why when it has none (another driver, or a
    file form the twin styles do not read)."""
    if not isinstance(spec.backend, KIMBackend):
        raise ValueError(f"{spec.id} is not an OpenKIM model")
    driver, files = model_files(spec.backend.model)
    if driver.startswith(EAM_DRIVER):
        if len(files) != 1:
            raise ValueError(f"{spec.id}: {len(files)} parameter files ({sorted(files)}); a twin is made from one "
                             "setfl or Finnis-Sinclair file")
        (name, content), = files.items()
        style = next((s for suffix, s in STYLE_OF_SUFFIX if name.lower().endswith(suffix)), None)
        if style is None:
            raise ValueError(f"{spec.id}: its parameter file {name!r} is neither a setfl nor a Finnis-Sinclair "
                             "file (by its name): no LAMMPS twin")
    elif driver.startswith(MEAM_DRIVER):
        splines = {n: c for n, c in files.items() if n.lower().endswith(".meam.spline")}
        others = sorted(n for n in files if n not in splines and not n.lower().startswith("elems"))
        if len(splines) != 1 or others or len(spec.species) != 1:
            raise ValueError(f"{spec.id}: parameter files {sorted(files)}, species {list(spec.species)}; a twin is "
                             "made from one single-element .meam.spline file")
        (name, content), = splines.items()
        style = "meam/spline"
    elif driver.startswith(SPLINE_EAM_DRIVER):
        if len(files) != 1:
            raise ValueError(f"{spec.id}: {len(files)} parameter files ({sorted(files)}); a twin is made from one "
                             "setfl or Finnis-Sinclair file")
        (name, content), = files.items()
        style = tabulated_eam_style(spec.id, name, content)
    elif driver.startswith(SW_DRIVER):
        if len(files) != 1:
            raise ValueError(f"{spec.id}: {len(files)} parameter files ({sorted(files)}); a twin is made from one "
                             "SW parameter file")
        (name, content), = files.items()
        content, style = sw_file(spec.id, name, content), "sw"
    else:
        known = ", ".join(d.rstrip("_") for d in (EAM_DRIVER, SPLINE_EAM_DRIVER, MEAM_DRIVER, SW_DRIVER))
        raise ValueError(f"{spec.id} runs on the OpenKIM driver {driver or '(none)'}, none of {known}: no LAMMPS "
                         "twin is made from its files")
    return FileTwin(spec.id, style, f"{spec.id}.{style.replace('/', '.')}", content)


def tabulated_eam_style(kim_id: str, name: str, content: bytes) -> str:
    """"eam/alloy" for a setfl file, "eam/fs" for a Finnis-Sinclair one (they differ in how many density tables
    follow each element's line); ValueError for anything else. One element: the two forms coincide (eam/alloy)."""
    lines = content.decode().splitlines()
    try:
        n_elements = int(lines[3].split()[0])
        n_rho, _, n_r = lines[4].split()[:3]
        n_rho, n_r = int(n_rho), int(n_r)
        tokens = len(" ".join(lines[5:]).split())  # element lines (4 tokens each) and the tables
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{kim_id}: its parameter file {name!r} has no setfl header ({exc}): no LAMMPS twin") from None
    pairs = n_elements * (n_elements + 1) // 2 * n_r
    if tokens == n_elements * (4 + n_rho + n_r) + pairs:
        return "eam/alloy"
    if tokens == n_elements * (4 + n_rho + n_elements * n_r) + pairs:
        return "eam/fs"
    raise ValueError(f"{kim_id}: its parameter file {name!r} holds {tokens} values after the header, neither a setfl "
                     f"nor a Finnis-Sinclair file of {n_elements} element(s), {n_rho} densities and {n_r} distances: "
                     "no LAMMPS twin")


def sw_file(kim_id: str, name: str, content: bytes) -> bytes:
    """A LAMMPS ``sw`` file equal to the OpenKIM SW driver's parameter file ``content`` (one species).

    The driver's line ``S S A B p q sigma lambda gamma costheta0 cutoff`` holds A·ε, λ·ε, γ·σ and a·σ; LAMMPS's
    ``S S S epsilon sigma a lambda gamma costheta0 A B p q tol`` takes them with ε = 1 eV: a = cutoff / σ,
    γ = gamma / σ, the rest as they are, tol 0 (no three-body cut-off shortcut)."""
    rows = [line.split() for line in content.decode().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        n_species = int(rows[0][0])
        if n_species != 1:
            raise ValueError(f"{n_species} species; a twin is made from a single-species SW parameter file")
        element, other, *values = rows[1][:11]
        if other != element or len(values) != 9:
            raise ValueError(f"expected one line 'S S A B p q sigma lambda gamma costheta0 cutoff', got {rows[1]}")
        a_eps, b, p, q, sigma, lam_eps, gamma_sigma, cos0, cutoff = (float(v) for v in values)
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{kim_id}: its SW parameter file {name!r}: {exc}: no LAMMPS twin") from None
    return (f"# {kim_id}: LAMMPS sw form of OpenKIM parameter file {name} (epsilon 1 eV, a = cutoff / sigma, "
            "gamma = gamma*sigma / sigma)\n"
            f"{element} {element} {element} 1.0 {sigma!r} {cutoff / sigma!r} {lam_eps!r} {gamma_sigma / sigma!r} "
            f"{cos0!r} {a_eps!r} {b!r} {p!r} {q!r} 0.0\n").encode()


def model_files(model: str) -> tuple[str, dict[str, bytes]]:
    """(driver id, {file name: bytes} of the parameter files) of installed OpenKIM portable model ``model``."""
    import kimpy

    collections = kimpy.collections.create()
    try:
        library, _ = collections.get_item_library_file_name_and_collection(
            kimpy.collection_item_type.portableModel, model)
    except RuntimeError as exc:
        raise ValueError(f"OpenKIM model {model} is not installed ({exc})") from exc
    kim_api = ctypes.util.find_library("kim-api")
    if kim_api is None:
        raise ValueError("the KIM-API library (libkim-api) is not found: cannot read an OpenKIM model's files")
    ctypes.CDLL(kim_api, mode=ctypes.RTLD_GLOBAL)  # the model library's undefined KIM symbols
    lib = ctypes.CDLL(library)
    version = ctypes.c_int.in_dll(lib, "kim_shared_library_schema_version").value
    if version != 2:
        raise ValueError(f"OpenKIM model {model}: shared-library schema version {version}; this reader knows 2")
    schema = _SchemaV2.in_dll(lib, "kim_shared_library_schema")
    files = {}
    for k in range(schema.n_parameter_files):
        f = schema.parameter_files[k]
        files[f.name.decode()] = ctypes.string_at(f.data, f.length)
    return (schema.driver_name or b"").decode(), files
