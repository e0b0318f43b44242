"""WordNet for NLTK's METEOR, from Debian's packages when NLTK has none of its own.

METEOR matches synonyms through WordNet, which NLTK normally downloads (`nltk.download("wordnet")`); GPU nodes
and CI here reach package registries but not NLTK's download server. Debian's `wordnet-base` and
`wordnet-sense-index` ship the same WordNet 3.0 database files under /usr/share/wordnet, so `ensure_wordnet`
lays them out the way NLTK's reader expects (`<data dir>/corpora/wordnet/`) and puts that data directory on
`nltk.data.path`. They are copied (37 MB, once), not linked: NLTK's reader refuses paths that resolve outside its
corpus directory. Debian leaves out `lexnames`, which NLTK's reader opens first, so it is written from WordNet
3.0's fixed list. Where neither NLTK nor Debian has WordNet the run stops with WordNetMissing: a METEOR without
synonym matching would be a different, lower number under the same name.

Several ranks may build the directory at once: each builds its own temporary directory and renames it into
place; a rename onto the finished directory fails, and the loser drops its copy. NLTK is imported where used
(it takes a second), so WordNetMissing can be imported for nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from spottrain_contract.errors import ConfigurationError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
INSTALL = "apt-get install wordnet-base wordnet-sense-index"

# The files NLTK's WordNetCorpusReader opens (its _FILES), lexnames aside: wordnet-base ships all but
# index.sense, which wordnet-sense-index adds.
DEBIAN_FILES = ("cntlist.rev", "index.sense", *(f"{kind}.{pos}" for kind in ("index", "data")
                                                for pos in ("adj", "adv", "noun", "verb")),
                "adj.exc", "adv.exc", "noun.exc", "verb.exc")

# WordNet 3.0's lexnames: file number, lexicographer file, syntactic category (1 noun, 2 verb, 3 adjective,
# 4 adverb), as listed in lexnames(5WN).
LEXNAMES = ["adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
            "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
            "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
            "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
            "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
            "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
            "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
            "verb.stative", "verb.weather", "adj.ppl"]
CATEGORIES = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissing(ConfigurationError):
    """NLTK finds no WordNet and none can be built from Debian's files: METEOR cannot be computed. A node's setup
    that no restart heals, so the run stops at once with this one line."""


def default_data_dir() -> Path:
    """Where the bridge is built: the first directory of $NLTK_DATA (which NLTK searches already), else
    ~/.cache/spottrain/nltk_data."""
    configured = [entry for entry in os.environ.get("NLTK_DATA", "").split(os.pathsep) if entry]
    return Path(configured[0]) if configured else Path.home() / ".cache" / "spottrain" / "nltk_data"


def _lexnames_text() -> str:
    """The `lexnames` file NLTK's reader needs, tab-separated: "00 adj.all 3" … "44 adj.ppl 3"."""
    return "".join(f"{number:02d}\t{name}\t{CATEGORIES[name.split('.')[0]]}\n"
                   for number, name in enumerate(LEXNAMES))


def ensure_wordnet(source: Path = DEBIAN_WORDNET, data_dir: Path | None = None) -> None:
    """Make `nltk.corpus.wordnet` usable and check it with a synonym-only METEOR, or raise WordNetMissing.

    NLTK's own WordNet (on nltk.data.path) is used as it is; otherwise `data_dir` (default_data_dir()) gets
    `corpora/wordnet/` built from `source` (Debian's files) if it has none, and joins nltk.data.path."""
    import nltk

    if not _nltk_finds_wordnet():
        data_dir = data_dir or default_data_dir()
        if not (data_dir / "corpora" / "wordnet").is_dir():
            build(source, data_dir)
        if str(data_dir) not in nltk.data.path:
            nltk.data.path.append(str(data_dir))
    _check()


def wordnet_ready(source: Path = DEBIAN_WORDNET, data_dir: Path | None = None) -> bool:
    """Whether METEOR can be computed here (ensure_wordnet succeeds)."""
    try:
        ensure_wordnet(source, data_dir)
    except WordNetMissing:
        return False
    return True


def _nltk_finds_wordnet() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    return True


def build(source: Path, data_dir: Path) -> None:
    """`data_dir/corpora/wordnet/`: copies of `source`'s database files and a written lexnames; a directory
    another process finished first is kept."""
    missing = [name for name in DEBIAN_FILES if not (source / name).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WordNetMissing(f"METEOR needs WordNet: NLTK has none and {source} lacks {shown}; Debian: {INSTALL}")
    corpora = data_dir / "corpora"
    corpora.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpora))
    building.chmod(0o755)  # mkdtemp's 0700 would hide a shared $NLTK_DATA from other users
    for name in DEBIAN_FILES:
        shutil.copyfile(source / name, building / name)
    (building / "lexnames").write_text(_lexnames_text())
    try:
        building.rename(corpora / "wordnet")
    except OSError:
        shutil.rmtree(building)  # another process renamed its copy into place first
        if not (corpora / "wordnet").is_dir():
            raise


def _check() -> None:
    """"car" against "auto" matches only through WordNet's synsets (car.n.01; NLTK looks up the Porter stems,
    which for these two are the words themselves): a zero METEOR, or a reader that cannot load, means the WordNet
    NLTK found is unusable."""
    from nltk.translate.meteor_score import single_meteor_score

    try:
        score = single_meteor_score(["auto"], ["car"])
    except (LookupError, OSError) as error:  # NLTK's LookupError is a many-line banner: named, not quoted
        raise WordNetMissing(f"METEOR needs WordNet: NLTK's cannot be read ({type(error).__name__}); "
                             f"Debian: {INSTALL}") from error
    if score == 0:
        raise WordNetMissing(f"METEOR needs WordNet: NLTK's finds no synonyms; Debian: {INSTALL}")
