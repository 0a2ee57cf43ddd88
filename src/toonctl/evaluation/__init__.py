"""``toonctl eval``: ToonCrafter's benchmark (Table 1 of the paper) on the user's own clips.

For each clip a window of ``num_frames`` frames is cut, its first and last frames are given to every engine
(the generative model, a linear cross-fade, a flow interpolator) and the in-betweens are compared with the
real frames. Modules, one job each:

* ``frechet``: Fréchet distance between Gaussians fitted to feature sets (FVD);
* ``kernel``: unbiased squared MMD with the polynomial kernel (KVD);
* ``i3d``: video features from a user-supplied I3D TorchScript file;
* ``cpbd``: the CPBD sharpness index (Narvekar & Karam 2011);
* ``scoring``: every per-frame metric of one clip and engine, and which ones are unavailable and why;
* ``engines``: the interpolators compared (``toonctl``, ``blend``, ``rife``);
* ``protocol``: clip windows, the fs condition, per-clip seeds;
* ``cache``: generated clips stored in the report folder (resumable runs);
* ``media``: contact sheets and side-by-side videos;
* ``report``: per-clip rows, means, JSON/CSV;
* ``runner``: the whole evaluation, driven by the CLI.
"""
