"""Regenerate data_samples/ct/ from the real CT data in ../shared/data/ct (deterministic).

    .venv/bin/python data_samples/ct/make_samples.py [--data ../shared/data/ct]

Writes, beside this script:
  ct_small.nii.gz       example_ct_sm.nii.gz (122 x 101 x 30, int16 HU, 3 mm) subsampled by 2 in x and y
                        (every other voxel, values unchanged: no interpolation) -> 61 x 51 x 30, 6 x 6 x 3 mm;
                        the affine is the original one with the x/y columns doubled
  ct_small_seg.nii.gz   example_seg.nii.gz (TotalSegmentator label map of example_ct_sm) subsampled the same way
                        (uint8 labels, same affine as ct_small.nii.gz)
  dicom_small/          4 evenly spaced slices (the 1st, 7th, 13th and 19th: 12 mm apart) of the real DICOM series in dicom/, every 8th row and
                        column (512 -> 64, PixelSpacing x 8), stored uncompressed (Explicit VR Little Endian) with
                        only the geometry, rescale and pixel tags kept (new UIDs, no patient data)
"""
import argparse
from pathlib import Path
import numpy as np
import nibabel as nib

HERE = Path(__file__).resolve().parent


def subsample_nifti(src: Path, dst: Path, step: int = 2, dtype=None):
    img = nib.load(str(src))
    a = np.asarray(img.dataobj)[::step, ::step, :]
    aff = img.affine.copy()
    aff[:3, 0] *= step; aff[:3, 1] *= step     # voxel (i, j) of the subsample is voxel (step*i, step*j) of the source
    out = nib.Nifti1Image(a.astype(dtype or a.dtype), aff)
    out.set_qform(aff, code=1); out.set_sform(aff, code=1)
    nib.save(out, str(dst))
    return a.shape


def small_dicom(src_dir: Path, dst_dir: Path, keep=(0, 6, 12, 18), step: int = 8):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid, CTImageStorage
    files = sorted(p for p in src_dir.iterdir() if p.is_file())
    slices = sorted((pydicom.dcmread(str(p)) for p in files), key=lambda d: int(d.InstanceNumber))
    dst_dir.mkdir(exist_ok=True)
    for old in dst_dir.glob('*.dcm'): old.unlink()
    study, series = generate_uid(entropy_srcs=['medvox ct_small study']), generate_uid(entropy_srcs=['medvox ct_small series'])
    for n, i in enumerate(keep):
        s = slices[i]
        px = s.pixel_array[::step, ::step].astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f'medvox ct_small slice {i}'])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        d = Dataset(); d.file_meta = meta
        d.SOPClassUID, d.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        d.StudyInstanceUID, d.SeriesInstanceUID = study, series
        d.Modality, d.PatientName, d.PatientID = 'CT', 'anonymous', 'medvox-sample'
        d.SeriesNumber, d.InstanceNumber = 1, n + 1
        d.ImagePositionPatient = [float(v) for v in s.ImagePositionPatient]
        d.ImageOrientationPatient = [float(v) for v in s.ImageOrientationPatient]
        d.PixelSpacing = [float(v) * step for v in s.PixelSpacing]
        d.SliceThickness = float(s.SliceThickness)
        d.RescaleSlope, d.RescaleIntercept = float(s.RescaleSlope), float(s.RescaleIntercept)
        d.Rows, d.Columns = px.shape
        d.SamplesPerPixel, d.PhotometricInterpretation = 1, 'MONOCHROME2'
        d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 16, 15, 0
        d.PixelData = px.tobytes()
        d.save_as(str(dst_dir/f'slice_{n:03d}.dcm'), enforce_file_format=True)
    return len(keep), px.shape


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default=str(HERE.parents[2]/'shared'/'data'/'ct'))
    a = ap.parse_args()
    data = Path(a.data)
    print('ct_small.nii.gz', subsample_nifti(data/'example_ct_sm.nii.gz', HERE/'ct_small.nii.gz'))
    print('ct_small_seg.nii.gz', subsample_nifti(data/'example_seg.nii.gz', HERE/'ct_small_seg.nii.gz'))
    print('dicom_small', small_dicom(data/'dicom', HERE/'dicom_small'))
