"""Writing predictions as COCO-format results, loadable with pycocotools' ``COCO.loadRes``.

Two files: ``NAME.json`` is the results list (``image_id``, ``category_id``, ``bbox`` as XYWH,
``score``, ``segmentation`` as RLE), ``NAME_images.json`` a COCO dataset without annotations
(``images`` with file names and sizes, ``categories`` with class names), so that
``COCO("NAME_images.json").loadRes("NAME.json")`` opens the predictions on their own.
"""

import json
import os

from detectron2.evaluation.coco_evaluation import instances_to_coco_json

__all__ = ["CocoResultsWriter", "assign_image_ids"]


def assign_image_ids(paths):
    """COCO image ids for files: their numeric names (COCO's ``000000397133.jpg`` -> 397133) when
    every name is a distinct number, so results match the dataset's ids; else 1..N in order."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


class CocoResultsWriter:
    """Collects predicted ``Instances`` per image and writes them in COCO results format."""

    def __init__(self, metadata):
        """
        Args:
            metadata: the dataset's metadata; ``thing_classes`` names the categories and
                ``thing_dataset_id_to_contiguous_id`` (when present) maps the model's class
                indices back to the dataset's category ids.
        """
        mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
        self.class_names = list(metadata.get("thing_classes", None) or [])
        self.category_ids = (
            {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
            if mapping
            else None
        )
        self.images = []
        self.results = []

    def add(self, image_id, file_name, height, width, instances):
        """Record one image and its predicted ``instances`` (on the CPU, original coordinates)."""
        self.images.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width}
        )
        for result in instances_to_coco_json(instances, image_id):
            result["category_id"] = self._category_id(result["category_id"])
            self.results.append(result)

    def _category_id(self, contiguous):
        if self.category_ids is None:
            return contiguous
        if contiguous not in self.category_ids:
            raise ValueError(f"predicted class {contiguous} has no category id in the metadata")
        return self.category_ids[contiguous]

    def categories(self):
        """COCO ``categories`` for every class the metadata names or a prediction used."""
        used = {r["category_id"] for r in self.results}
        if self.category_ids is not None:
            ids = {i: self.category_ids[i] for i in range(len(self.class_names))}
        else:
            ids = {i: i for i in range(len(self.class_names))}
        named = {dataset_id: self.class_names[i] for i, dataset_id in ids.items()}
        all_ids = sorted(set(named) | used)
        return [{"id": i, "name": named.get(i, str(i))} for i in all_ids]

    def save(self, path):
        """Write ``path`` (results list) and ``<path stem>_images.json``; returns both paths."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.results, f)
        images_path = os.path.splitext(path)[0] + "_images.json"
        dataset = {"images": self.images, "categories": self.categories(), "annotations": []}
        with open(images_path, "w") as f:
            json.dump(dataset, f)
        return path, images_path
