"""Training and data: scenes, datasets, the training loop and its trace, checkpoints, evaluation.

      scenes.py          the synthetic scene painter: squares, circles, triangles, a cartoon dog and cat
      data.py            the synthetic dataset: make_scene, ShapesDataset, the target form, CLASSES
      images.py          to_image_tensor: images from files, PIL, numpy or tensors as Tensor[3, H, W]
      coco.py            COCO folders: export_coco, CocoFolder (read any COCO folder), their checks
      encoding.py        images and detections as compact JSON text (PNG, COCO run-length masks)
      evaluation.py      box and mask mAP with pycocotools, average precision written out, recall and precision
      recipe.py          Recipe: the data, the schedule and the seed; each epoch's scenes
      loop.py            train(): a TrainingRun (model, optimizer, schedule, world, checkpoint) and its epochs
      training_step.py   train_step (lesson 07's reference), the batch it takes, the gradient limit
      validation.py      after each epoch: the validation losses and metrics (recall, precision, mAP, predictions)
      training_trace.py  TrainingTrace: per-epoch losses, recall, precision, mAP, predictions, an observation
      budget.py          fit_to_budget: the capstone's run within the time budget, timed against the package's
      checkpoints.py     save and resume a run exactly (weights, optimizer, random states), with a digest
      stopping.py        why a run stops early and what it says: divergence, Ctrl-C
      distributed.py     torchrun / DistributedDataParallel helpers; the CPUs a process may use (torch's threads)
      pretrained.py      the shipped small model (pretrained/) and the reference's figures for each budget
      ablation.py        the ablation lab: one change at a time (RoI Pool, softmax masks, ...), its shipped table

Import a module by its own address: `from mrcnn_course.training import data, loop`, then `loop.train()`.
Uses the model; never pictures or teaching (what only autograding needs is in teaching/autograding.py).
"""
