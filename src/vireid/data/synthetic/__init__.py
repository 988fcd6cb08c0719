"""Synthetic visible-infrared people written in the five real dataset layouts.

The real benchmarks are licensed and cannot be downloaded here, so tests, the demo
and the learning yardstick run on people rendered by this package (docs/synthetic.md).

Public API
----------
- :data:`LAYOUTS`, :func:`synthesize` -- write a whole dataset in a real layout.
- :func:`sample_attributes`, :class:`PersonAttributes` -- an identity's fixed look.
- :func:`render_person`, :func:`render_pair`, :func:`render_tracklet`,
  :func:`render_tracklet_pair` -- images and tracklets as uint8 arrays.
- :func:`rasterize`, :func:`colorize` -- the two rendering steps (part map, then light).

Format facts behind the writers
-------------------------------
[V] = seen in the public reference loaders (DDAG/AGW-style SYSU, RegDB and LLCM
loaders; MITML's HITSZ-VCM loader; the BUPTCampus authors' dataloader), [T] = seen
only in third-party code or comments, [U] = assumed.

SYSU-MM01
  [V] ``cam{1..6}/<pid 4 digits>/<4-digit index>.jpg`` (the reference loader reads the
  camera at ``path[-15]`` and the pid at ``path[-13:-9]``); ``exp/{train,val,test}_id.txt``
  hold one comma-separated line of unpadded ints. [U] trailing newline; the ids are
  drawn from 1..~533*N/491 with gaps, like the real numbering.
RegDB
  [V] ``idx/{train,test}_{visible,thermal}_{k}.txt`` for k = 1..10, lines
  ``<relative path> <label>`` with one space; ``Visible/<id>/`` and ``Thermal/<id>/``
  folders with unpadded ids. [T] names ``{male|female}_{front|back}_{v|t}_{5 digits}_{id}.bmp``.
  [U] the 5-digit number is shared by a visible image and its thermal twin; labels are
  0-based positions in the trial's shuffled id order, lines grouped by id; thermal BMPs
  are 24-bit with 3 equal channels.
LLCM
  [V] ``idx/test_id.txt`` one comma-separated line; ``test_vis/cam1..9/<pid 4>/`` and
  ``test_nir/cam{1,2,4..9}/<pid 4>/``; idx lines ``<relative path> <label>``.
  [T] names ``<pid 4>_c<cam 2>_s<6 digits>_f<frame>_{vis|nir}.jpg``; training paths
  ``vis/<pid 4>/<name>`` and ``nir/<pid 4>/<name>``; idx test lines also point into
  ``vis/`` / ``nir/`` (so test images are written there too, option
  ``test_copies_in_train_dirs``). [U] training labels are 0-based ranks of the pid
  among training ids (shared by both modalities), test labels the same among test ids.
HITSZ-VCM
  [V] frame names ``<pid 4>M<m>D<cam>T<tracklet>F<frame>.jpg`` decoded to
  ``<pid>/<ir|rgb>/D<cam>/<frame>.jpg`` (m = 1 infrared, 2 visible); track info rows
  ``m start end pid camid`` single-space separated with 1-based inclusive indices into
  the name list; ``query_IDX.txt`` is read as one line of space-separated 1-based row
  numbers; a ``Train/`` / ``Test/`` level exists in some unpackings only (option
  ``split_dirs``). [T] 12 cameras, train pids below test pids. [U] frame numbers run on
  across the tracklets of one (pid, modality, camera) folder; camid equals the D number;
  query_IDX lists every infrared test tracklet.
BUPTCampus
  [V] ``data_paths.json``: pid -> modality -> camera -> tracklet id -> frame paths
  relative to ``DATA/``; list lines ``obj_id modality camera tracklet_id`` with
  modality ``RGB/IR`` for training and ``RGB`` / ``IR`` for query and gallery; cameras
  LS3, G25, CQ1, W4, TSG1, TSG2; the fake set is found by replacing ``/RGB/`` with
  ``/FakeIR/`` in a path.
  [T] ``DATA/<pid>/<IR|RGB|FakeIR>/<cam>/<pid>_<MOD>_<cam>_<tid>_<frame>.jpg``
  with unpadded pids and tracklet ids from "1"; FakeIR files keep the ``RGB`` name;
  one query tracklet per test id (IR or RGB), gallery holds both modalities.
  [U] a ``FakeIR`` key in data_paths.json; gallery excludes the query's camera.

Every file is fully determined by ``seed``: each identity, camera, image and tracklet
has its own generator seeded from (seed, purpose, layout, pid, modality, camera, index).
"""

from .layouts import (
    DEFAULT_NUM_IDS,
    LAYOUTS,
    MANIFEST,
    MARKER,
    MIN_NUM_IDS,
    SyntheticLayoutError,
    synthesize,
)
from .people import (
    PATTERNS,
    CameraProfile,
    Garment,
    PersonAttributes,
    Pose,
    make_rng,
    sample_attributes,
    sample_camera,
    sample_pose,
)
from .render import (
    Layers,
    colorize,
    rasterize,
    render_pair,
    render_person,
    render_tracklet,
    render_tracklet_pair,
)

__all__ = [
    "DEFAULT_NUM_IDS",
    "LAYOUTS",
    "MANIFEST",
    "MARKER",
    "MIN_NUM_IDS",
    "PATTERNS",
    "CameraProfile",
    "Garment",
    "Layers",
    "PersonAttributes",
    "Pose",
    "SyntheticLayoutError",
    "colorize",
    "make_rng",
    "rasterize",
    "render_pair",
    "render_person",
    "render_tracklet",
    "render_tracklet_pair",
    "sample_attributes",
    "sample_camera",
    "sample_pose",
    "synthesize",
]
