"""The working Mask R-CNN, in plain PyTorch: one module per stage, in the order data flows.

    1 input_image.py       normalize, resize by the min/max-size rule, batch with padding, map boxes back
      input_checks.py      the model's input check: a clear error for a bad image or target; the dtype rule
    2 backbone.py          ResNet (bottleneck and basic blocks) + Feature Pyramid Network
    3 rpn.py               anchors, RPN head, proposal filtering, RPN losses
    4 roi_align.py         vectorized RoI Align, FPN level mapping, the multi-scale pooler
    5 box_head.py          two-layer MLP head, predictor, Fast R-CNN loss, detection post-processing
    6 mask_head.py         mask head, predictor, mask targets, mask loss, pasting masks (bounded in memory)
      box_ops.py           shared box pieces: IoU, BoxCoder (encode/decode), NMS, clipping
      matching.py          Matcher (IoU -> ground truth) and the balanced positive/negative sampler
      maskrcnn.py          the assembly: MaskRCNN, maskrcnn_resnet50_fpn, SmallConfig, maskrcnn_small
      components.py        the registry: which implementation of each stage's core function runs
      torchvision_ops.py   torchvision's versions of the components (the oracle, and fast C++ ops)
      prediction_trace.py  model.trace(image): what each stage took and gave, from the live model

Nothing here imports training, pictures or teaching.
"""

from mrcnn_course.model import components

# components.nms and the other forwarders copy the stage modules' functions' signatures, so they are made once
# components is complete; this file runs before any module of the package, whichever is imported first.
components.make_forwarders()
