"""DeCAF6 against DeCAF7: the two fully connected layers of VGG16 as generic image features.

The story
---------
Donahue et al. (2014, "DeCAF") showed that the activations of a network trained on ImageNet,
read at its first or second fully connected layer (``fc6``, ``fc7``, after their ReLU) and fed to
a linear classifier, beat the hand-engineered features of the time on tasks the network was never
trained for; ``fc6`` often transferred a little better than ``fc7``, the layer closer to
ImageNet's own labels. skdeep knows these layers by name for AlexNet and VGG (``"pool5"``,
``"fc6"``, ``"fc7"``), so the experiment is one parameter.

VGG16's ImageNet weights are not bundled with skdeep (they are 528 MB). With internet, or with
the file already in the torch hub cache (``~/.cache/torch/hub/checkpoints/vgg16-397923af.pth``),
``weights="DEFAULT"`` uses them. Offline, skdeep raises :class:`skdeep.WeightsUnavailableError`
immediately, with the path where the file is expected; this script catches it and falls back to a
randomly initialised VGG16 (``weights=None``, seeded), so that it still runs end to end. Random
features are NOT DeCAF: the comparison printed then only shows the mechanics, and says so.

VGG16 is a heavy network (15 GFLOPs per image at 224 px), so this script feeds it small inputs
(``image_size=64``; ``fc6`` follows an adaptive pooling, so any input size works) and few images.
Runs in about a minute on a CPU with the weights cached. SKDEEP_EXAMPLE_SMALL=1 runs a tiny
version.
"""

import os

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skdeep
from skdeep import PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

SMALL = os.environ.get("SKDEEP_EXAMPLE_SMALL", "0") != "0"
N_IMAGES = 60 if SMALL else 300
IMAGE_SIZE = 32 if SMALL else 64

images, labels = load_fashion_sample(return_X_y=True)
images, _, labels, _ = train_test_split(
    images, labels, train_size=N_IMAGES, stratify=labels, random_state=0
)

print("VGG16 layers with DeCAF names:", skdeep.list_layers("vgg16")[2:5])

# One forward pass reads both layers; the columns of each are told apart by their names.
try:
    cnn = PretrainedCNNFeatures("vgg16", weights="DEFAULT", layer=["fc6", "fc7"],
                                image_size=IMAGE_SIZE)
    cnn.fit()
    pretrained = True
except skdeep.WeightsUnavailableError as error:
    print(f"\nNOTE: {error}")
    print("NOTE: falling back to weights=None (random VGG16): the numbers below show how to run "
          "the comparison, not how DeCAF features perform.\n")
    cnn = PretrainedCNNFeatures("vgg16", weights=None, layer=["fc6", "fc7"],
                                image_size=IMAGE_SIZE, random_state=0)
    cnn.fit()
    pretrained = False

features = cnn.transform(images)  # (n_images, 4096 + 4096)
fc6, fc7 = features[:, :4096], features[:, 4096:]
print(f"embedded {len(images)} images: {features.shape[1]} columns "
      f"({cnn.get_feature_names_out()[0]} ... {cnn.get_feature_names_out()[-1]})")

# The network is frozen and learns nothing from the images, so embedding once before the folds
# are drawn leaks nothing: only the scaler and the linear model are fitted per fold.
linear = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
kind = "ImageNet VGG16" if pretrained else "RANDOM VGG16 (not DeCAF)"
print(f"\n3-fold accuracy of a linear classifier on {kind} features, {N_IMAGES} images:")
for name, block in [("DeCAF6 (fc6)", fc6), ("DeCAF7 (fc7)", fc7), ("fc6 + fc7", features)]:
    scores = cross_val_score(linear, block, labels, cv=folds)
    print(f"  {name:<13} {scores.mean():.3f} +- {scores.std():.3f}")
