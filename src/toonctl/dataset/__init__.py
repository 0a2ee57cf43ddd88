"""``toonctl dataset``: turn raw cartoon episodes into a training set (ToonCrafter paper §3.2's curation).

The pipeline, one module per step:

* ``sources``: the episode files under the inputs, their stable keys, and ``--shard I/N``;
* ``probe``: frame count and rate of an episode, with one clear reason when it cannot be read;
* ``shots``: shot boundaries with PySceneDetect's content detector, shots cut into clips;
* ``holds``: held drawings (animation on twos, threes): distinct drawings and the drawing rate;
* ``motion``: mean optical-flow magnitude (OpenCV DIS), for the static-shot filter;
* ``text``: the optional text filter (a measurable heuristic, or a detector command the user gives);
* ``captions``: captions from a CSV, sidecar text files or a fixed prompt;
* ``episode``: one episode from decoding to clip files and a part record (what a worker does);
* ``store``: the dataset folder (parts, markers, atomic writes) and the final manifest and scores;
* ``scoring``: CLIP caption-frame alignment and an aesthetic head (optional, needs the model weights);
* ``report`` / ``plots``: counts, histograms and a contact sheet;
* ``build`` / ``merge`` / ``inspection``: the three commands' work.

OpenCV and PySceneDetect are an optional extra (``pip install 'toonctl[dataset]'``), imported lazily.
"""

from toonctl.dataset.settings import BuildSettings

__all__ = ["BuildSettings"]
