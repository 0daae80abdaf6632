"""Pictures and widgets: what the lessons and demos show.

      viz.py            images with boxes, labels and masks; the training curves; figures as PNG
      stage_viz.py      the prediction trace drawn stage by stage, the data-flow table, NMS, anchors
      roi_geometry.py   RoI Align's sampling grid and RoI Pool's quantization, for the pictures
      explorers.py      interactive explorers (ipywidgets): anchors, NMS, RoI Align, mask threshold
      widgets.py        TrainingViewer: the training trace epoch by epoch (slider, curves, predictions)
      static_picture.py what a widget shows, also as a PNG and text, for where no kernel runs
      overview_card.py  lesson 0's card: the overview's numbers beside the live R-50-FPN's and small model's

Uses the model and training; nothing below imports it.
"""
