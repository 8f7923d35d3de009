"""Data loaders for Cityscapes semantic segmentation (19 train ids) on Detectron2's own
registration, ``cityscapes_fine_sem_seg_{train,val}``.

Detectron2's COCO loader config with the Cityscapes recipe of its semantic segmentation
projects (DeepLab, Panoptic-DeepLab): random rescale of the short edge to 512-2048, a 512x1024
crop where no class covers more than 75%, flip; full 1024x2048 images at test time.
Evaluated by SemSegEvaluator on the train ids (the official mIoU, without cityscapesscripts).
Expects $DETECTRON2_DATASETS/cityscapes/{leftImg8bit,gtFine}/ with *_labelTrainIds.png.
"""
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.evaluation import SemSegEvaluator

dataloader = model_zoo.get_config("common/data/coco.py").dataloader

dataloader.train.dataset.names = "cityscapes_fine_sem_seg_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=[512 + 256 * i for i in range(7)],
                            sample_style="choice", max_size=4096),
    L(T.RandomCrop_CategoryAreaConstraint)(crop_type="absolute", crop_size=(512, 1024),
                                           single_category_max_area=0.75, ignored_category=255),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.use_instance_mask = False
dataloader.train.total_batch_size = 8

dataloader.test.dataset.names = "cityscapes_fine_sem_seg_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=1024,
                                                                max_size=2048)]
dataloader.evaluator = L(SemSegEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)
