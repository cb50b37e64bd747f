/// Petrel's version: `petreld --version`, the API's `Server` header, `petrel_build_info`.
public enum PetrelVersion {
    public static let version = "0.1.0"
}
