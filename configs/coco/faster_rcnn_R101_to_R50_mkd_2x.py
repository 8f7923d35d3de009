"""MKD on COCO: the model zoo's Faster R-CNN R101-FPN 3x (42.0 box AP) teaches Faster R-CNN
R50-FPN (ImageNet init, 2x schedule)."""
from .mask_rcnn_R101_to_R50_mkd_2x import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper.use_instance_mask = False
for detector in (model.teacher, model.student):  # Faster R-CNN = Mask R-CNN without mask head
    detector.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
model.teacher_weights = (
    "detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl"
)
train.output_dir = "./output/coco/faster_rcnn_R101_to_R50_mkd_2x"
