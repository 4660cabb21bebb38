"""One fitted estimator used from several threads gives each thread its own, correct rows.

A web server or a thread pool shares one fitted model. The feature extractor reads activations
with hooks on that shared network, so without care two threads read each other's activations
(a KeyError, or worse, another image's features). Each thread here embeds its own images many
times and must get exactly what a single-threaded run gives.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures

N_THREADS = 4
ROUNDS = 6


def _per_thread_inputs(images: np.ndarray) -> list[np.ndarray]:
    # Different images per thread, so a mix-up between threads changes the numbers.
    return [np.roll(images, shift, axis=2) for shift in range(N_THREADS)]


def _run_in_threads(function, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    def work(x: np.ndarray) -> list[np.ndarray]:
        return [function(x) for _ in range(ROUNDS)]

    with ThreadPoolExecutor(N_THREADS) as pool:
        return list(pool.map(work, inputs))


def test_transform_from_threads_matches_single_thread(rgb_images):
    # Two layers, one early in the network: exercises both hooks and the early stop.
    cnn = PretrainedCNNFeatures(weights=None, random_state=0, image_size=32, precision="fp32",
                                layer=["blocks.2", "penultimate"], batch_size=2).fit()
    inputs = _per_thread_inputs(rgb_images)
    expected = [cnn.transform(x) for x in inputs]
    assert not np.allclose(expected[0], expected[1])  # the threads' inputs really differ

    for x_expected, results in zip(expected, _run_in_threads(cnn.transform, inputs)):
        for result in results:
            np.testing.assert_allclose(result, x_expected, rtol=1e-5, atol=1e-6)


def test_predict_proba_from_threads_matches_single_thread(labelled_images):
    images, labels = labelled_images
    clf = FineTunedCNNClassifier(weights=None, random_state=0, image_size=32, precision="fp32",
                                 epochs=1, batch_size=2, validation_fraction=0,
                                 early_stopping=False).fit(images[:8], labels[:8])
    inputs = _per_thread_inputs(images[8:20])
    expected = [clf.predict_proba(x) for x in inputs]

    for x_expected, results in zip(expected, _run_in_threads(clf.predict_proba, inputs)):
        for result in results:
            np.testing.assert_allclose(result, x_expected, rtol=1e-5, atol=1e-7)
