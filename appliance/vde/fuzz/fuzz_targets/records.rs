#![no_main]
//! Metadata records and policy records: never panic; what decodes re-encodes identically.
use dw_vde::records::{
    ContainerRecord, ExtentRecord, InodeRecord, ObjectRecord, PartRecord, SegmentRecord, SnapshotRecord, StateRecord,
    UploadRecord,
};
use libfuzzer_sys::fuzz_target;

macro_rules! roundtrip {
    ($t:ty, $d:expr) => {
        if let Ok(r) = <$t>::decode($d) {
            assert_eq!(<$t>::decode(&r.encode()).ok(), Some(r));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    roundtrip!(ExtentRecord, data);
    roundtrip!(InodeRecord, data);
    roundtrip!(ObjectRecord, data);
    roundtrip!(ContainerRecord, data);
    roundtrip!(SegmentRecord, data);
    roundtrip!(SnapshotRecord, data);
    roundtrip!(UploadRecord, data);
    roundtrip!(PartRecord, data);
    roundtrip!(StateRecord, data);
    if let Ok(p) = dw_vde::policy::decode(data) {
        assert_eq!(dw_vde::policy::decode(&dw_vde::policy::encode(&p)), Ok(p));
    }
});
