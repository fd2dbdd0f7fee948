use super::*;

const MIGRATION: &str = "0123456789abcdef0123456789abcdef";

fn master(byte: u8) -> KeySource {
    let text = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    KeySource::master_key(&text, "TREESHIFT_MASTER_KEY").unwrap()
}

fn secrets() -> Secrets {
    let mut s = Secrets::new();
    s.insert("AWS_ACCESS_KEY_ID", Secret::new("AKIDEXAMPLE".into()));
    s.insert(
        "AWS_SECRET_ACCESS_KEY",
        Secret::new("wJalr/XUtnFEMI\n".into()),
    );
    s
}

#[test]
fn a_sealed_connection_opens_only_where_it_was_sealed() {
    let key = DataKey::generate();
    let sealed = key.seal(MIGRATION, "conn-a", &secrets()).unwrap();
    assert!(!sealed.windows(11).any(|w| w == b"AKIDEXAMPLE"));
    assert_eq!(key.open(MIGRATION, "conn-a", &sealed).unwrap(), secrets());
    // Another row, another migration, another data key, one bit changed.
    assert!(matches!(
        key.open(MIGRATION, "conn-b", &sealed),
        Err(VaultError::Tampered(_))
    ));
    assert!(key.open("ffff", "conn-a", &sealed).is_err());
    assert!(
        DataKey::generate()
            .open(MIGRATION, "conn-a", &sealed)
            .is_err()
    );
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(key.open(MIGRATION, "conn-a", &flipped).is_err());
    assert!(matches!(
        key.open(MIGRATION, "conn-a", &sealed[..10]),
        Err(VaultError::Corrupt(_))
    ));
}

#[test]
fn a_data_key_unwraps_only_with_its_key() {
    let key = DataKey::generate();
    let sealed = key.seal(MIGRATION, "c", &secrets()).unwrap();
    let wrapped = key.wrap(&master(7), MIGRATION).unwrap();
    assert_eq!(wrapped.kind().unwrap(), KeyKind::MasterKey);
    let again = DataKey::unwrap(&wrapped, &master(7), MIGRATION).unwrap();
    assert_eq!(again.open(MIGRATION, "c", &sealed).unwrap(), secrets());
    assert!(matches!(
        DataKey::unwrap(&wrapped, &master(8), MIGRATION),
        Err(VaultError::WrongKey(KeyKind::MasterKey))
    ));
    assert!(DataKey::unwrap(&wrapped, &master(7), "another").is_err());
    let pass = |p: &str| KeySource::passphrase(Secret::new(p.into())).unwrap();
    assert!(matches!(
        DataKey::unwrap(&wrapped, &pass("x"), MIGRATION),
        Err(VaultError::OtherKind { .. })
    ));
    let by_pass = key.wrap(&pass("correct horse"), MIGRATION).unwrap();
    assert_eq!(by_pass.kind().unwrap(), KeyKind::Passphrase);
    assert!(DataKey::unwrap(&by_pass, &pass("correct horse"), MIGRATION).is_ok());
    assert!(matches!(
        DataKey::unwrap(&by_pass, &pass("wrong horse"), MIGRATION),
        Err(VaultError::WrongKey(KeyKind::Passphrase))
    ));
    // The header (Argon2id's cost) is authenticated too.
    let mut cheaper = by_pass.0.clone();
    cheaper[5] ^= 1;
    assert!(DataKey::unwrap(&WrappedKey(cheaper), &pass("correct horse"), MIGRATION).is_err());
}

#[test]
fn bad_keys_are_refused_with_what_is_wrong() {
    let e = KeySource::master_key("not base64!", "TREESHIFT_MASTER_KEY").unwrap_err();
    assert!(e.to_string().contains("not base64"), "{e}");
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let e = KeySource::master_key(&short, "TREESHIFT_MASTER_KEY").unwrap_err();
    assert!(e.to_string().contains("16 bytes"), "{e}");
    assert!(KeySource::passphrase(Secret::new(String::new())).is_err());
    assert!(format!("{:?}", DataKey::generate()).contains("redacted"));
}
